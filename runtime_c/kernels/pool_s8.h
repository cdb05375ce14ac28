/* Pooling on int8 planes (the frozen layers): MaxPool (same scale and zero point in and out),
 * QLinearAveragePool and QLinearGlobalAveragePool. The averages requantize the window's int32 sum
 * of (x - zx) with the multiplier of its tap count: q.mult[count - 1], q.shift[count - 1]
 * (codegen/requant.py, averages). Also includes pool.h, so one header serves float and int8. */
#ifndef MT_POOL_S8_H
#define MT_POOL_S8_H
#include "../mt_common.h"
#include "pool.h"
#include "quant_s8.h"

enum { MT_POOL_MAX, MT_POOL_AVG, MT_POOL_AVG_PAD };

/* X (P, h, w) -> Y (P, oh, ow): each window's maximum (MT_POOL_MAX; every window has an input tap,
 * pads are narrower than the kernel) or its mean, the count being mt_avg_divisor's: padding taps
 * count as real zeros with MT_POOL_AVG_PAD. */
MT_SPECIALIZE void mt_pool_s8(const int8_t *X, int32_t zx, int8_t *Y, int P, mt_window g, int kind, mt_requant q)
{
    int p, oh, ow, i, j;
    for (p = 0; p < P; ++p) {
        const int8_t *x = X + (size_t)p * g.h * g.w;
        int8_t *y = Y + (size_t)p * g.oh * g.ow;
        for (oh = 0; oh < g.oh; ++oh) {
            for (ow = 0; ow < g.ow; ++ow) {
                const mt_taps t = mt_window_at(&g, oh, ow);
                int32_t acc = 0;
                int8_t m = -128;
                for (i = t.i0; i < t.i1; ++i) {
                    const int8_t *r = x + mt_tap_offset(&g, &t, i);
                    for (j = 0; j < t.j1 - t.j0; ++j) {
                        acc += (int32_t)r[j * g.dw] - zx;
                        if (r[j * g.dw] > m) m = r[j * g.dw];
                    }
                }
                y[oh * g.ow + ow] = kind == MT_POOL_MAX ? m
                    : mt_requant_s8(acc, &q, (int)mt_avg_divisor(&g, &t, kind == MT_POOL_AVG_PAD) - 1);
            }
        }
    }
}

MT_SPECIALIZE void mt_max_pool_s8(const int8_t *X, int8_t *Y, int P, mt_window g)
{
    const mt_requant none = {NULL, NULL, 0, 0, 0, 0};
    mt_pool_s8(X, 0, Y, P, g, MT_POOL_MAX, none);
}

MT_SPECIALIZE void mt_avg_pool_s8(const int8_t *X, int32_t zx, int8_t *Y, int P, mt_window g, int count_pad,
                                  mt_requant q)
{
    mt_pool_s8(X, zx, Y, P, g, count_pad ? MT_POOL_AVG_PAD : MT_POOL_AVG, q);
}

/* X (P, n) -> Y (P): the mean of each plane of n values (q holds the one multiplier for n). */
static inline void mt_global_avg_pool_s8(const int8_t *X, int32_t zx, int8_t *Y, int P, int n, mt_requant q)
{
    int p, i;
    for (p = 0; p < P; ++p) {
        const int8_t *x = X + (size_t)p * n;
        int32_t acc = 0;
        for (i = 0; i < n; ++i) acc += (int32_t)x[i] - zx;
        Y[p] = mt_requant_s8(acc, &q, 0);
    }
}

/* dX (P, h, w) = dY (P, oh, ow) routed to each window's first largest int8 input (the float
 * kernel's rule; same scale in and out, so nothing saturates and no mask is needed). */
MT_SPECIALIZE void mt_max_pool_grad_s8(const float *dY, const int8_t *X, float *dX, int P, mt_window g)
{
    int p, oh, ow, i, j;
    memset(dX, 0, (size_t)P * g.h * g.w * sizeof(float));
    for (p = 0; p < P; ++p) {
        const int8_t *x = X + (size_t)p * g.h * g.w;
        for (oh = 0; oh < g.oh; ++oh) {
            for (ow = 0; ow < g.ow; ++ow) {
                const mt_taps t = mt_window_at(&g, oh, ow);
                int best = -1, m = -129;
                for (i = t.i0; i < t.i1; ++i) {
                    const int row = mt_tap_offset(&g, &t, i);
                    for (j = 0; j < t.j1 - t.j0; ++j)
                        if (x[row + j * g.dw] > m) m = x[best = row + j * g.dw];
                }
                if (best >= 0) dX[(size_t)p * g.h * g.w + best] += dY[((size_t)p * g.oh + oh) * g.ow + ow];
            }
        }
    }
}

#endif
