/* LRN (ONNX): y = x / (bias + alpha / size * square_sum)^beta, square_sum over the channels
   [c - (size - 1) / 2, c + size / 2] (floor and ceil of (size - 1) / 2) clipped to [0, n). Tensors
   are viewed as (outer, n, inner), the channel axis is n. */
#ifndef MT_LRN_H
#define MT_LRN_H
#include "../mt_common.h"

/* The denominator's base bias + alpha / size * square_sum of channel c; xs points at channel 0. */
static inline float mt_lrn_base(const float *xs, int c, int n, int inner, int size, float alpha, float bias)
{
    const int lo = c - (size - 1) / 2 < 0 ? 0 : c - (size - 1) / 2;
    const int hi = c + size / 2 > n - 1 ? n - 1 : c + size / 2;
    float s = 0.0f;
    int i;
    for (i = lo; i <= hi; ++i) s += xs[(size_t)i * inner] * xs[(size_t)i * inner];
    return bias + alpha / (float)size * s;
}

static inline void mt_lrn(const float *x, float *y, int outer, int n, int inner, int size, float alpha,
                          float beta, float bias)
{
    int o, c, j;
    for (o = 0; o < outer; ++o) {
        for (j = 0; j < inner; ++j) {
            const size_t base = (size_t)o * n * inner + j;
            for (c = 0; c < n; ++c) {
                const size_t k = base + (size_t)c * inner;
                y[k] = x[k] * powf(mt_lrn_base(x + base, c, n, inner, size, alpha, bias), -beta);
            }
        }
    }
}

/* dx_j = dy_j * d_j^-beta - 2 * alpha * beta / size * x_j * sum(dy_c * y_c / d_c) over the channels c
   whose window holds j: [j - size / 2, j + (size - 1) / 2]. */
static inline void mt_lrn_grad(const float *dy, const float *x, const float *y, float *dx, int outer, int n,
                               int inner, int size, float alpha, float beta, float bias)
{
    int o, c, j, i;
    for (o = 0; o < outer; ++o) {
        for (i = 0; i < inner; ++i) {
            const size_t base = (size_t)o * n * inner + i;
            for (j = 0; j < n; ++j) {
                const int lo = j - size / 2 < 0 ? 0 : j - size / 2;
                const int hi = j + (size - 1) / 2 > n - 1 ? n - 1 : j + (size - 1) / 2;
                const size_t k = base + (size_t)j * inner;
                float s = 0.0f;
                for (c = lo; c <= hi; ++c) {
                    const size_t kc = base + (size_t)c * inner;
                    s += dy[kc] * y[kc] / mt_lrn_base(x + base, c, n, inner, size, alpha, bias);
                }
                dx[k] = dy[k] * powf(mt_lrn_base(x + base, j, n, inner, size, alpha, bias), -beta)
                        - 2.0f * alpha * beta / (float)size * x[k] * s;
            }
        }
    }
}
#endif
