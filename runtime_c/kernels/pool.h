/* Sliding windows over (N, C, H, W) planes, and the pooling kernels with their gradients.
 * A 1-D input (N, C, W) is the same with H = 1 (and a 1-tap, stride-1, unpadded H window).
 * Output pixel (oh, ow) covers input rows oh*sh - pt + i*dh (i < kh) and columns
 * ow*sw - pl + j*dw (j < kw); taps outside the input are padding. */
#ifndef MT_POOL_H
#define MT_POOL_H
#include "../mt_common.h"

typedef struct {
    int h, w;           /* input plane */
    int oh, ow;         /* output plane */
    int kh, kw;         /* kernel taps */
    int sh, sw;         /* strides */
    int dh, dw;         /* dilations */
    int pt, pl, pb, pr; /* pads: top, left, bottom, right */
} mt_window;

/* One output pixel's window: top-left input position (ih, iw) (negative inside the padding) and the taps
 * [i0, i1) x [j0, j1) that fall inside the input. */
typedef struct {
    int ih, iw, i0, i1, j0, j1;
} mt_taps;

/* The i in [0, k) with base + i*d inside [0, size): [*lo, *hi), empty when *lo == *hi. */
MT_SPECIALIZE void mt_span(int base, int d, int k, int size, int *lo, int *hi)
{
    int l, h;
    if (d == 1) { /* no division in the common case: this runs once per pooling window */
        l = base < 0 ? -base : 0;
        h = size > base ? size - base : 0;
    } else {
        l = base < 0 ? (-base + d - 1) / d : 0;
        h = size > base ? (size - base + d - 1) / d : 0;
    }
    if (h > k) h = k;
    *lo = l;
    *hi = h > l ? h : l;
}

MT_SPECIALIZE mt_taps mt_window_at(const mt_window *g, int oh, int ow)
{
    mt_taps t;
    t.ih = oh * g->sh - g->pt;
    t.iw = ow * g->sw - g->pl;
    mt_span(t.ih, g->dh, g->kh, g->h, &t.i0, &t.i1);
    mt_span(t.iw, g->dw, g->kw, g->w, &t.j0, &t.j1);
    return t;
}

/* Offset in the plane of window row i's first input tap (column j0). */
MT_SPECIALIZE int mt_tap_offset(const mt_window *g, const mt_taps *t, int i)
{
    return (t->ih + i * g->dh) * g->w + t->iw + t->j0 * g->dw;
}

/* dx plane += w * the dY plane dm, read through tap (i, j): one weight's share of the transposed
 * convolution (the int8 layers' backward_s8.h). */
MT_SPECIALIZE void mt_conv_scatter_tap(const float *MT_RESTRICT dm, float *MT_RESTRICT dx, float w, int i, int j,
                                       const mt_window *g)
{
    int o, q, o0, o1, q0, q1;
    mt_span(i * g->dh - g->pt, g->sh, g->oh, g->h, &o0, &o1);
    mt_span(j * g->dw - g->pl, g->sw, g->ow, g->w, &q0, &q1);
    for (o = o0; o < o1; ++o) {
        const float *dr = dm + o * g->ow + q0;
        float *xr = dx + (o * g->sh + i * g->dh - g->pt) * g->w + q0 * g->sw + j * g->dw - g->pl;
        for (q = 0; q < q1 - q0; ++q) xr[q * g->sw] += w * dr[q];
    }
}

/* The running maximum m and its offset best, as tap v at offset k comes in: NaN wins, as in
 * PyTorch; ties keep the first. Cores with a vector unit (deep pipelines, MT_SIMD) select with
 * masks, not branches, which random data would mispredict; microcontrollers branch. */
MT_SPECIALIZE void mt_max_take(float v, int k, float *m, int *best)
{
    const int take = (*best < 0) | (v > *m) | (v != v);
#if MT_SIMD
    const uint32_t mask = (uint32_t)-take;
    uint32_t bm, bv;
    memcpy(&bm, m, sizeof bm);
    memcpy(&bv, &v, sizeof bv);
    bm ^= (bm ^ bv) & mask;
    memcpy(m, &bm, sizeof bm);
    *best ^= (*best ^ k) & (int)mask;
#else
    if (take) {
        *m = v;
        *best = k;
    }
#endif
}

/* Offset in the plane of the first (max-)largest input tap (a NaN propagates); -1 for a window
 * of padding only.
 * Ties keep the first in row-major window order, as PyTorch does. */
MT_SPECIALIZE int mt_max_tap(const float *x, const mt_window *g, int oh, int ow)
{
    const mt_taps t = mt_window_at(g, oh, ow);
    int i, j, best = -1;
    float m = -INFINITY;
    for (i = t.i0; i < t.i1; ++i) {
        const int row = mt_tap_offset(g, &t, i);
        for (j = 0; j < t.j1 - t.j0; ++j) {
            mt_max_take(x[row + j * g->dw], row + j * g->dw, &m, &best);
        }
    }
    return best;
}

/* X (P, h, w) -> Y (P, oh, ow) over P = N*C planes; a window of padding only gives -inf. */
MT_SPECIALIZE void mt_max_pool(const float *X, float *Y, int P, mt_window g)
{
    int p, oh, ow;
    for (p = 0; p < P; ++p) {
        const float *x = X + (size_t)p * g.h * g.w;
        float *y = Y + (size_t)p * g.oh * g.ow;
        for (oh = 0; oh < g.oh; ++oh) {
            for (ow = 0; ow < g.ow; ++ow) {
                const int k = mt_max_tap(x, &g, oh, ow);
                y[oh * g.ow + ow] = k >= 0 ? x[k] : -INFINITY;
            }
        }
    }
}

/* dX = dY routed to each window's argmax (recomputed from X: no index buffer is kept). */
MT_SPECIALIZE void mt_max_pool_grad(const float *dY, const float *X, float *dX, int P, mt_window g)
{
    int p, oh, ow;
    memset(dX, 0, (size_t)P * g.h * g.w * sizeof(float));
    for (p = 0; p < P; ++p) {
        const float *x = X + (size_t)p * g.h * g.w;
        const float *dy = dY + (size_t)p * g.oh * g.ow;
        float *dx = dX + (size_t)p * g.h * g.w;
        for (oh = 0; oh < g.oh; ++oh) {
            for (ow = 0; ow < g.ow; ++ow) {
                const int k = mt_max_tap(x, &g, oh, ow);
                if (k >= 0) dx[k] += dy[oh * g.ow + ow];
            }
        }
    }
}

/* The averaging divisor of a window: its input taps, or (count_pad) its taps inside the padded
 * input; taps beyond the padding (ceil_mode's last window) never count. */
MT_SPECIALIZE float mt_avg_divisor(const mt_window *g, const mt_taps *t, int count_pad)
{
    int i0, i1, j0, j1;
    if (!count_pad) return (float)((t->i1 - t->i0) * (t->j1 - t->j0));
    mt_span(t->ih + g->pt, g->dh, g->kh, g->h + g->pt + g->pb, &i0, &i1);
    mt_span(t->iw + g->pl, g->dw, g->kw, g->w + g->pl + g->pr, &j0, &j1);
    return (float)((i1 - i0) * (j1 - j0));
}

/* X (P, h, w) -> Y (P, oh, ow): window sums over mt_avg_divisor. */
MT_SPECIALIZE void mt_avg_pool(const float *X, float *Y, int P, mt_window g, int count_pad)
{
    int p, oh, ow, i, j;
    for (p = 0; p < P; ++p) {
        const float *x = X + (size_t)p * g.h * g.w;
        float *y = Y + (size_t)p * g.oh * g.ow;
        for (oh = 0; oh < g.oh; ++oh) {
            for (ow = 0; ow < g.ow; ++ow) {
                const mt_taps t = mt_window_at(&g, oh, ow);
                float acc = 0.0f;
                for (i = t.i0; i < t.i1; ++i) {
                    const float *r = x + mt_tap_offset(&g, &t, i);
                    for (j = 0; j < t.j1 - t.j0; ++j) acc += r[j * g.dw];
                }
                y[oh * g.ow + ow] = acc / mt_avg_divisor(&g, &t, count_pad);
            }
        }
    }
}

/* dX: each window's dY / divisor spread over its input taps (windows may overlap). */
MT_SPECIALIZE void mt_avg_pool_grad(const float *dY, float *dX, int P, mt_window g, int count_pad)
{
    int p, oh, ow, i, j;
    memset(dX, 0, (size_t)P * g.h * g.w * sizeof(float));
    for (p = 0; p < P; ++p) {
        const float *dy = dY + (size_t)p * g.oh * g.ow;
        float *dx = dX + (size_t)p * g.h * g.w;
        for (oh = 0; oh < g.oh; ++oh) {
            for (ow = 0; ow < g.ow; ++ow) {
                const mt_taps t = mt_window_at(&g, oh, ow);
                const float v = dy[oh * g.ow + ow] / mt_avg_divisor(&g, &t, count_pad);
                for (i = t.i0; i < t.i1; ++i) {
                    float *r = dx + mt_tap_offset(&g, &t, i);
                    for (j = 0; j < t.j1 - t.j0; ++j) r[j * g.dw] += v;
                }
            }
        }
    }
}

/* X (P, n) -> Y (P): the mean of each plane of n values. */
static inline void mt_global_avg_pool(const float *X, float *Y, int P, int n)
{
    int p, i;
    for (p = 0; p < P; ++p) {
        const float *x = X + (size_t)p * n;
        float acc = 0.0f;
        for (i = 0; i < n; ++i) acc += x[i];
        Y[p] = acc / (float)n;
    }
}

static inline void mt_global_avg_pool_grad(const float *dY, float *dX, int P, int n)
{
    int p, i;
    for (p = 0; p < P; ++p) {
        const float v = dY[p] / (float)n;
        float *dx = dX + (size_t)p * n;
        for (i = 0; i < n; ++i) dx[i] = v;
    }
}

#endif
