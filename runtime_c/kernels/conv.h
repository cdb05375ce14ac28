/* Grouped 2-D convolution (1-D: H = 1) and its gradients, on the windows of pool.h.
 * X (N, C, h, w), W (M, C/G, kh, kw), B (M) or NULL, Y (N, M, oh, ow); output channel m reads
 * input channels of group m / (M/G). Every kernel writes (does not accumulate into) its output. */
#ifndef MT_CONV_H
#define MT_CONV_H
#include "../mt_common.h"
#include "pool.h"

/* Y = conv(X, W) + B: one dot product per output pixel, over the taps inside the input. */
static inline void mt_conv(const float *X, const float *W, const float *B, float *Y, int N, int C,
                           int M, int G, mt_window g)
{
    const int cg = C / G, mg = M / G, plane = g.h * g.w, kk = g.kh * g.kw;
    int n, m, oh, ow, c, i, j;
    for (n = 0; n < N; ++n) {
        for (m = 0; m < M; ++m) {
            const float *x = X + ((size_t)n * C + (size_t)(m / mg) * cg) * plane;
            const float *wm = W + (size_t)m * cg * kk;
            float *y = Y + ((size_t)n * M + m) * g.oh * g.ow;
            for (oh = 0; oh < g.oh; ++oh) {
                for (ow = 0; ow < g.ow; ++ow) {
                    const mt_taps t = mt_window_at(&g, oh, ow);
                    float acc = B ? B[m] : 0.0f;
                    for (c = 0; c < cg; ++c) {
                        for (i = t.i0; i < t.i1; ++i) {
                            const float *xr = x + (size_t)c * plane + mt_tap_offset(&g, &t, i);
                            const float *wr = wm + ((size_t)c * g.kh + i) * g.kw + t.j0;
                            for (j = 0; j < t.j1 - t.j0; ++j) acc += xr[j * g.dw] * wr[j];
                        }
                    }
                    y[oh * g.ow + ow] = acc;
                }
            }
        }
    }
}

/* dW[m][c][i][j] = sum over n and output pixels of dY * the input tap (i, j) of that pixel. */
static inline void mt_conv_grad_w(const float *dY, const float *X, float *dW, int N, int C, int M,
                                  int G, mt_window g)
{
    const int cg = C / G, mg = M / G, plane = g.h * g.w;
    int m, c, i, j, n, o, q, o0, o1, q0, q1;
    for (m = 0; m < M; ++m) {
        for (c = 0; c < cg; ++c) {
            const size_t xc = (size_t)(m / mg) * cg + c;
            for (i = 0; i < g.kh; ++i) {
                /* output rows o whose tap i lands inside the input */
                mt_span(i * g.dh - g.pt, g.sh, g.oh, g.h, &o0, &o1);
                for (j = 0; j < g.kw; ++j) {
                    float acc = 0.0f;
                    mt_span(j * g.dw - g.pl, g.sw, g.ow, g.w, &q0, &q1);
                    for (n = 0; n < N; ++n) {
                        const float *dy = dY + ((size_t)n * M + m) * g.oh * g.ow;
                        const float *x = X + ((size_t)n * C + xc) * plane;
                        for (o = o0; o < o1; ++o) {
                            const float *dr = dy + o * g.ow + q0;
                            const float *xr = x + (o * g.sh + i * g.dh - g.pt) * g.w +
                                              q0 * g.sw + j * g.dw - g.pl;
                            for (q = 0; q < q1 - q0; ++q) acc += dr[q] * xr[q * g.sw];
                        }
                    }
                    dW[(((size_t)m * cg + c) * g.kh + i) * g.kw + j] = acc;
                }
            }
        }
    }
}

/* dB[m] = sum of dY over the batch and the output plane. */
static inline void mt_conv_grad_b(const float *dY, float *dB, int N, int M, int plane)
{
    int n, m, k;
    for (m = 0; m < M; ++m) {
        float acc = 0.0f;
        for (n = 0; n < N; ++n) {
            const float *dy = dY + ((size_t)n * M + m) * plane;
            for (k = 0; k < plane; ++k) acc += dy[k];
        }
        dB[m] = acc;
    }
}

/* The smallest kernel-tap step that moves the output by a whole number of strides: s/gcd(s, d). */
static inline int mt_tap_step(int s, int d)
{
    int a = s, b = d;
    while (b) {
        const int r = a % b;
        a = b;
        b = r;
    }
    return s / a;
}

/* The taps of a k-tap kernel (dilation d, stride s, `out` outputs) that read padded position t:
 * tap *k0 + a*step feeds output *o0 - a*(step*d/s), for a below the returned count. */
static inline int mt_conv_taps(int t, int k, int d, int s, int out, int step, int *k0, int *o0)
{
    const int over = t - (out - 1) * s; /* taps below this would need an output past the end */
    const int last = t / d < k - 1 ? t / d : k - 1;
    int i;
    *k0 = *o0 = 0;
    for (i = over > 0 ? (over + d - 1) / d : 0; i <= last; ++i) {
        if ((t - i * d) % s == 0) {
            *k0 = i;
            *o0 = (t - i * d) / s;
            return (last - i) / step + 1;
        }
    }
    return 0;
}

/* dX = the transposed convolution of dY with W: per input pixel, a sum over the (output, tap)
 * pairs that read it. */
static inline void mt_conv_grad_x(const float *dY, const float *W, float *dX, int N, int C, int M,
                                  int G, mt_window g)
{
    const int cg = C / G, mg = M / G, kk = g.kh * g.kw, oplane = g.oh * g.ow;
    const int sth = mt_tap_step(g.sh, g.dh), stw = mt_tap_step(g.sw, g.dw);
    const int doh = sth * g.dh / g.sh, dow = stw * g.dw / g.sw;
    int n, c, ih, iw, m, a, b, kh0, oh0, kw0, ow0, nh, nw;
    for (n = 0; n < N; ++n) {
        for (c = 0; c < C; ++c) {
            const float *dy = dY + ((size_t)n * M + (size_t)(c / cg) * mg) * oplane;
            const float *wc = W + ((size_t)(c / cg) * mg * cg + c % cg) * kk;
            float *dx = dX + ((size_t)n * C + c) * g.h * g.w;
            for (ih = 0; ih < g.h; ++ih) {
                nh = mt_conv_taps(ih + g.pt, g.kh, g.dh, g.sh, g.oh, sth, &kh0, &oh0);
                for (iw = 0; iw < g.w; ++iw) {
                    float acc = 0.0f;
                    nw = mt_conv_taps(iw + g.pl, g.kw, g.dw, g.sw, g.ow, stw, &kw0, &ow0);
                    for (m = 0; m < mg; ++m) {
                        for (a = 0; a < nh; ++a) {
                            const float *dr = dy + (size_t)m * oplane + (oh0 - a * doh) * g.ow + ow0;
                            const float *wr = wc + (size_t)m * cg * kk + (kh0 + a * sth) * g.kw + kw0;
                            for (b = 0; b < nw; ++b) acc += dr[-b * dow] * wr[b * stw];
                        }
                    }
                    dx[ih * g.w + iw] = acc;
                }
            }
        }
    }
}

#endif
