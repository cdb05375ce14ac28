/* conv.h for cores without a vector unit: scalar loops over contiguous rows, few registers. */
#ifndef MT_CONV_ROWS_H
#define MT_CONV_ROWS_H
#include "../mt_common.h"
#include "pool.h"

/* Y = conv(X, W) + B, tap by tap: for each weight, a scaled input row is added to a contiguous
 * output row (no per-pixel window bookkeeping). Every output still sums
 * bias, then channels, then taps in row-major order, like a per-pixel dot product. */
static inline void mt_conv(const float *MT_RESTRICT X, const float *MT_RESTRICT W, const float *MT_RESTRICT B,
                           float *MT_RESTRICT Y, int N, int C, int M, int G, mt_window g)
{
    const int cg = C / G, mg = M / G, plane = g.h * g.w, oplane = g.oh * g.ow;
    int n, m, c, i, j, o, q, o0, o1, q0, q1, k;
    for (n = 0; n < N; ++n) {
        for (m = 0; m < M; ++m) {
            const float *x = X + ((size_t)n * C + (size_t)(m / mg) * cg) * plane;
            const float *wm = W + (size_t)m * cg * g.kh * g.kw;
            float *y = Y + ((size_t)n * M + m) * oplane;
            const float b = B ? B[m] : 0.0f;
            for (k = 0; k < oplane; ++k) y[k] = b;
            for (c = 0; c < cg; ++c) {
                for (i = 0; i < g.kh; ++i) {
                    mt_span(i * g.dh - g.pt, g.sh, g.oh, g.h, &o0, &o1);
                    for (j = 0; j < g.kw; ++j) {
                        const float w = *wm++;
                        mt_span(j * g.dw - g.pl, g.sw, g.ow, g.w, &q0, &q1);
                        for (o = o0; o < o1; ++o) {
                            float *yr = y + o * g.ow + q0;
                            const float *xr = x + (size_t)c * plane + (o * g.sh + i * g.dh - g.pt) * g.w +
                                              q0 * g.sw + j * g.dw - g.pl;
                            for (q = 0; q < q1 - q0; ++q) yr[q] += w * xr[q * g.sw];
                        }
                    }
                }
            }
        }
    }
}

/* The largest window (taps) whose weight-gradient sums mt_conv_grad_w keeps in a local array. */
#define MT_PIXEL_TAPS 25

/* dW as mt_conv_grad_w below, output pixel by output pixel: a pixel whose dY is zero (a ReLU, Clip
 * or MaxPool stopped its gradient: three in four after 2x2 max pooling) is skipped whole. Each
 * tap's sum adds the other pixels in the same order, so the sums keep their bits. */
static inline void mt_conv_grad_w_pixels(const float *dY, const float *X, float *dW, int N, int C, int M,
                                         int G, mt_window g, float scale, float keep)
{
    const int cg = C / G, mg = M / G, plane = g.h * g.w, oplane = g.oh * g.ow, kk = g.kh * g.kw;
    int m, c, n, o, q, i, j, t;
    for (m = 0; m < M; ++m) {
        for (c = 0; c < cg; ++c) {
            const size_t xc = (size_t)(m / mg) * cg + c;
            float acc[MT_PIXEL_TAPS], *out = dW + ((size_t)m * cg + c) * kk;
            for (t = 0; t < kk; ++t) acc[t] = 0.0f;
            for (n = 0; n < N; ++n) {
                const float *dy = dY + ((size_t)n * M + m) * oplane, *x = X + ((size_t)n * C + xc) * plane;
                for (o = 0; o < g.oh; ++o) {
                    for (q = 0; q < g.ow; ++q) {
                        const float d = dy[o * g.ow + q];
                        mt_taps p;
                        if (d == 0.0f) continue;
                        p = mt_window_at(&g, o, q);
                        for (i = p.i0; i < p.i1; ++i) {
                            const float *xr = x + mt_tap_offset(&g, &p, i) - p.j0 * g.dw;
                            float *a = acc + i * g.kw;
                            for (j = p.j0; j < p.j1; ++j) a[j] += d * xr[j * g.dw];
                        }
                    }
                }
            }
            for (t = 0; t < kk; ++t) out[t] = mt_update(out[t], acc[t], scale, keep);
        }
    }
}

/* dW[m][c][i][j] = sum over n and output pixels of dY * the input tap (i, j) of that pixel. */
static inline void mt_conv_grad_w(const float *dY, const float *X, float *dW, int N, int C, int M,
                                  int G, mt_window g, float scale, float keep)
{
    const int cg = C / G, mg = M / G, plane = g.h * g.w;
    int m, c, i, j, n, o, q, o0, o1, q0, q1;
    if (g.kh * g.kw <= MT_PIXEL_TAPS) {
        mt_conv_grad_w_pixels(dY, X, dW, N, C, M, G, g, scale, keep);
        return;
    }
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
                    float *out = dW + (((size_t)m * cg + c) * g.kh + i) * g.kw + j;
                    *out = mt_update(*out, acc, scale, keep);
                }
            }
        }
    }
}

/* dX = the transposed convolution of dY with W, scattered tap by tap: each weight adds a scaled
 * dY row to the input row it was read from. Every dX pixel sums output channels, then taps in
 * row-major order. */
static inline void mt_conv_grad_x(const float *MT_RESTRICT dY, const float *MT_RESTRICT W, float *MT_RESTRICT dX,
                                  int N, int C, int M, int G, mt_window g)
{
    const int cg = C / G, mg = M / G, kk = g.kh * g.kw, oplane = g.oh * g.ow, plane = g.h * g.w;
    int n, c, m, i, j, k;
    for (n = 0; n < N; ++n) {
        for (c = 0; c < C; ++c) {
            const float *dy = dY + ((size_t)n * M + (size_t)(c / cg) * mg) * oplane;
            const float *wc = W + ((size_t)(c / cg) * mg * cg + c % cg) * kk;
            float *dx = dX + ((size_t)n * C + c) * plane;
            for (k = 0; k < plane; ++k) dx[k] = 0.0f;
            for (m = 0; m < mg; ++m) {
                const float *dm = dy + (size_t)m * oplane, *wr = wc + (size_t)m * cg * kk;
                for (i = 0; i < g.kh; ++i)
                    for (j = 0; j < g.kw; ++j) mt_conv_scatter_tap(dm, dx, *wr++, i, j, &g);
            }
        }
    }
}

#endif
