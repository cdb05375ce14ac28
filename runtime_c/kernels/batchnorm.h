/* BatchNormalization in inference form, from running statistics. x, y, dy, dx are (n, c, inner);
 * scale, bias, mean, var and their gradients are (c). The scale and bias gradients are stored
 * through mt_update (s, keep), so plain SGD can be applied in place. */
#ifndef MT_BATCHNORM_H
#define MT_BATCHNORM_H
#include "../mt_common.h"

/* y = scale * (x - mean) / sqrt(var + eps) + bias, as one multiply-add per element. */
static inline void mt_batchnorm(const float *x, const float *scale, const float *bias, const float *mean,
                                const float *var, float *y, int n, int c, int inner, float eps)
{
    int b, ch, i;
    for (b = 0; b < n; ++b) {
        for (ch = 0; ch < c; ++ch) {
            const float a = scale[ch] / sqrtf(var[ch] + eps), s = bias[ch] - mean[ch] * a;
            const float *xs = x + ((size_t)b * c + ch) * inner;
            float *ys = y + ((size_t)b * c + ch) * inner;
            for (i = 0; i < inner; ++i) ys[i] = xs[i] * a + s;
        }
    }
}

/* dx = dy * scale / sqrt(var + eps): the statistics are constants, so no batch terms. */
static inline void mt_batchnorm_grad_x(const float *dy, const float *scale, const float *var, float *dx,
                                       int n, int c, int inner, float eps)
{
    int b, ch, i;
    for (b = 0; b < n; ++b) {
        for (ch = 0; ch < c; ++ch) {
            const float a = scale[ch] / sqrtf(var[ch] + eps);
            const float *g = dy + ((size_t)b * c + ch) * inner;
            float *d = dx + ((size_t)b * c + ch) * inner;
            for (i = 0; i < inner; ++i) d[i] = g[i] * a;
        }
    }
}

/* dscale[ch] = sum over n, inner of dy * (x - mean) / sqrt(var + eps). */
static inline void mt_batchnorm_grad_scale(const float *dy, const float *x, const float *mean,
                                           const float *var, float *dscale, int n, int c, int inner,
                                           float eps, float s, float keep)
{
    int b, ch, i;
    for (ch = 0; ch < c; ++ch) {
        float sum = 0.0f;
        for (b = 0; b < n; ++b) {
            const float *g = dy + ((size_t)b * c + ch) * inner;
            const float *xs = x + ((size_t)b * c + ch) * inner;
            for (i = 0; i < inner; ++i) sum += g[i] * (xs[i] - mean[ch]);
        }
        dscale[ch] = mt_update(dscale[ch], sum / sqrtf(var[ch] + eps), s, keep);
    }
}

#endif
