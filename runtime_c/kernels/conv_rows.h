/* conv.h for cores without a vector unit: scalar loops, sums in registers. The kernels are inlined
 * at their call site (MT_INLINE), so a window's taps are constants and their loops unroll. */
#ifndef MT_CONV_ROWS_H
#define MT_CONV_ROWS_H
#include "../mt_common.h"
#include "pool.h"

/* Adjacent output pixels of a row that mt_conv_run sums at once. */
#define MT_CONV_RUN 4

/* The output columns [*qa, *qb) whose window columns all lie inside the input (no padding). */
static inline void mt_inner_columns(const mt_window *g, int *qa, int *qb)
{
    mt_span(-g->pl, g->sw, g->ow, g->w - (g->kw - 1) * g->dw, qa, qb);
}

/* One output pixel of channel m: bias, then channels, then the taps inside the input in row-major
 * order. x: the group's first input plane, wm: m's weights. */
static inline float mt_conv_pixel(const float *x, const float *wm, float b, int cg, const mt_window *g,
                                  int o, int q)
{
    const mt_taps t = mt_window_at(g, o, q);
    float acc = b;
    int c, i, j;
    for (c = 0; c < cg; ++c) {
        for (i = t.i0; i < t.i1; ++i) {
            const float *xr = x + (size_t)c * g->h * g->w + mt_tap_offset(g, &t, i);
            const float *wr = wm + ((size_t)c * g->kh + i) * g->kw + t.j0;
            for (j = 0; j < t.j1 - t.j0; ++j) acc += wr[j] * xr[j * g->dw];
        }
    }
    return acc;
}

/* MT_CONV_RUN adjacent pixels (o, q...) whose window columns lie inside the input, window rows
 * [i0, i1), summed in the order of mt_conv_pixel with the sums in registers: each weight is loaded
 * once for all of them, and with the taps of a row unrolled the compiler loads each input once. */
MT_INLINE void mt_conv_run(const float *x, const float *wm, float b, int cg, const mt_window *g, int o,
                           int q, int i0, int i1, float *y)
{
    const int corner = (o * g->sh - g->pt) * g->w + q * g->sw - g->pl; /* may lie in the top padding */
    float s0 = b, s1 = b, s2 = b, s3 = b;
    int c, i, j;
    for (c = 0; c < cg; ++c) {
        for (i = i0; i < i1; ++i) {
            const float *xr = x + (size_t)c * g->h * g->w + (corner + i * g->dh * g->w);
            const float *wr = wm + ((size_t)c * g->kh + i) * g->kw;
#pragma GCC unroll 8
            for (j = 0; j < g->kw; ++j) {
                const float v = wr[j], *xp = xr + j * g->dw;
                s0 += v * xp[0];
                s1 += v * xp[g->sw];
                s2 += v * xp[2 * g->sw];
                s3 += v * xp[3 * g->sw];
            }
        }
    }
    y[0] = s0;
    y[1] = s1;
    y[2] = s2;
    y[3] = s3;
}

/* Y = conv(X, W) + B, output pixel by output pixel (mt_conv_pixel's order: a per-pixel dot product);
 * the pixels clear of the left and right padding MT_CONV_RUN at a time (the last run of a row may
 * overlap the one before: its pixels get the same values again). */
MT_INLINE void mt_conv(const float *MT_RESTRICT X, const float *MT_RESTRICT W, const float *MT_RESTRICT B,
                       float *MT_RESTRICT Y, int N, int C, int M, int G, mt_window g)
{
    const int cg = C / G, mg = M / G, plane = g.h * g.w, oplane = g.oh * g.ow;
    int n, m, o, q, qa, qb, i0, i1;
    mt_inner_columns(&g, &qa, &qb);
    for (n = 0; n < N; ++n) {
        for (m = 0; m < M; ++m) {
            const float *x = X + ((size_t)n * C + (size_t)(m / mg) * cg) * plane;
            const float *wm = W + (size_t)m * cg * g.kh * g.kw;
            float *y = Y + ((size_t)n * M + m) * oplane;
            const float b = B ? B[m] : 0.0f;
            for (o = 0; o < g.oh; ++o, y += g.ow) {
                mt_span(o * g.sh - g.pt, g.dh, g.kh, g.h, &i0, &i1);
                for (q = 0; q < qa; ++q) y[q] = mt_conv_pixel(x, wm, b, cg, &g, o, q);
                for (; q < qb; q += MT_CONV_RUN) {
                    if (q + MT_CONV_RUN > qb) {
                        if (qb - qa < MT_CONV_RUN) break;
                        q = qb - MT_CONV_RUN;
                    }
                    mt_conv_run(x, wm, b, cg, &g, o, q, i0, i1, y + q);
                }
                for (; q < g.ow; ++q) y[q] = mt_conv_pixel(x, wm, b, cg, &g, o, q);
            }
        }
    }
}

/* The largest window (taps) whose weight-gradient sums mt_conv_grad_w keeps in registers. */
#define MT_PIXEL_TAPS 25

/* The output pixels (o, q) with o in [*oa, *ob), q in [*qa, *qb) whose window lies inside the input. */
static inline void mt_inner_window(const mt_window *g, int *oa, int *ob, int *qa, int *qb)
{
    mt_span(-g->pt, g->sh, g->oh, g->h - (g->kh - 1) * g->dh, oa, ob);
    mt_inner_columns(g, qa, qb);
}

/* One output pixel's share of a gradient, d times each tap (i, j) of its window (top-left input
 * position (ih, iw)) that lies inside the input; tap t = i * kw + j reads input offset k.
 * to_x: dst[k] += d * src[t] (dX from the weights); else dst[t] += d * src[k] (dW's sums).
 * full: the window lies inside the input. Unrolled by the call site's constant window, so the tap
 * sums stay in registers and each weight is at a constant offset. */
MT_INLINE void mt_window_axpy(float *MT_RESTRICT dst, const float *MT_RESTRICT src, float d, const mt_window *g,
                              int ih, int iw, int full, int to_x)
{
    int i, j;
#pragma GCC unroll 25
    for (i = 0; i < g->kh; ++i) {
        const int r = ih + i * g->dh;
#pragma GCC unroll 25
        for (j = 0; j < g->kw; ++j) {
            const int s = iw + j * g->dw, t = i * g->kw + j, k = r * g->w + s;
            if (!full && (r < 0 || r >= g->h || s < 0 || s >= g->w)) continue;
            if (to_x)
                dst[k] += d * src[t];
            else
                dst[t] += d * src[k];
        }
    }
}

/* dW as mt_conv_grad_w below, output pixel by output pixel: a pixel whose dY is zero (a ReLU, Clip
 * or MaxPool stopped its gradient: three in four after 2x2 max pooling) is skipped whole. Each
 * tap's sum adds the other pixels in the same order, so the sums keep their bits. */
MT_INLINE void mt_conv_grad_w_pixels(const float *dY, const float *X, float *dW, int N, int C, int M,
                                     int G, mt_window g, float scale, float keep)
{
    const int cg = C / G, mg = M / G, plane = g.h * g.w, oplane = g.oh * g.ow, kk = g.kh * g.kw;
    int m, c, n, o, q, t, oa, ob, qa, qb;
    mt_inner_window(&g, &oa, &ob, &qa, &qb);
    for (m = 0; m < M; ++m) {
        for (c = 0; c < cg; ++c) {
            const size_t xc = (size_t)(m / mg) * cg + c;
            float acc[MT_PIXEL_TAPS], *out = dW + ((size_t)m * cg + c) * kk;
#pragma GCC unroll 25
            for (t = 0; t < kk; ++t) acc[t] = 0.0f;
            for (n = 0; n < N; ++n) {
                const float *dy = dY + ((size_t)n * M + m) * oplane;
                const float *x = X + ((size_t)n * C + xc) * plane;
                for (o = 0; o < g.oh; ++o) {
                    const int ih = o * g.sh - g.pt, rows = o >= oa && o < ob;
                    for (q = 0; q < g.ow; ++q) {
                        const float d = dy[o * g.ow + q];
                        const int iw = q * g.sw - g.pl;
                        if (d == 0.0f) continue;
                        if (rows && q >= qa && q < qb)
                            mt_window_axpy(acc, x, d, &g, ih, iw, 1, 0);
                        else
                            mt_window_axpy(acc, x, d, &g, ih, iw, 0, 0);
                    }
                }
            }
#pragma GCC unroll 25
            for (t = 0; t < kk; ++t) out[t] = mt_update(out[t], acc[t], scale, keep);
        }
    }
}

/* dW[m][c][i][j] = sum over n and output pixels of dY * the input tap (i, j) of that pixel. */
MT_INLINE void mt_conv_grad_w(const float *dY, const float *X, float *dW, int N, int C, int M,
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

/* dX = the transposed convolution of dY with W, scattered output pixel by output pixel: each
 * nonzero dY value adds its weights times it to the input taps it was read from, in every input
 * channel of its group (a zero dY, stopped by a ReLU, Clip or MaxPool, adds nothing and is skipped).
 * Pixels go in reverse row-major order, so every dX pixel still sums output channels, then taps in
 * row-major order. */
MT_INLINE void mt_conv_grad_x(const float *MT_RESTRICT dY, const float *MT_RESTRICT W, float *MT_RESTRICT dX,
                              int N, int C, int M, int G, mt_window g)
{
    const int cg = C / G, mg = M / G, kk = g.kh * g.kw, oplane = g.oh * g.ow, plane = g.h * g.w;
    int n, c, m, o, q, oa, ob, qa, qb;
    mt_inner_window(&g, &oa, &ob, &qa, &qb);
    memset(dX, 0, (size_t)N * C * plane * sizeof(float));
    for (n = 0; n < N; ++n) {
        for (m = 0; m < M; ++m) {
            const float *dm = dY + ((size_t)n * M + m) * oplane;
            float *dx = dX + ((size_t)n * C + (size_t)(m / mg) * cg) * plane;
            for (o = g.oh - 1; o >= 0; --o) {
                const int ih = o * g.sh - g.pt, rows = o >= oa && o < ob;
                for (q = g.ow - 1; q >= 0; --q) {
                    const float d = dm[o * g.ow + q];
                    const int iw = q * g.sw - g.pl;
                    const float *wc = W + (size_t)m * cg * kk;
                    if (d == 0.0f) continue;
                    for (c = 0; c < cg; ++c, wc += kk) {
                        if (rows && q >= qa && q < qb)
                            mt_window_axpy(dx + (size_t)c * plane, wc, d, &g, ih, iw, 1, 1);
                        else
                            mt_window_axpy(dx + (size_t)c * plane, wc, d, &g, ih, iw, 0, 1);
                    }
                }
            }
        }
    }
}

#endif
