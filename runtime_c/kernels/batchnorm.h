/* BatchNormalization in inference form, from running statistics, and with batch statistics
 * (mt_batchnorm_train*). x, y, dy, dx are (n, c, inner); scale, bias, mean, var and their
 * gradients are (c). The scale and bias gradients are stored through mt_update (s, keep), so
 * plain SGD can be applied in place. */
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

/* Batch statistics: bmean, bvar = the mean and biased variance of each channel over n x inner
 * values (two passes, for precision), y normalised with them; then, when w > 0, the running
 * statistics move towards them: r = (1 - w) * r + w * batch, the variance unbiased (times
 * m / (m - 1), PyTorch) or not (the ONNX spec). A channel whose statistics are not finite leaves
 * its running statistics as they were. y may be x. Needs n * inner > 1. */
static inline void mt_batchnorm_train(const float *x, const float *scale, const float *bias, float *rmean,
                                      float *rvar, float *y, float *bmean, float *bvar, int n, int c, int inner,
                                      float eps, float w, int unbiased)
{
    const float m = (float)n * (float)inner;
    int b, ch, i;
    for (ch = 0; ch < c; ++ch) {
        float sum = 0.0f, sq = 0.0f, a, s;
        for (b = 0; b < n; ++b) {
            const float *xs = x + ((size_t)b * c + ch) * inner;
            for (i = 0; i < inner; ++i) sum += xs[i];
        }
        bmean[ch] = sum / m;
        for (b = 0; b < n; ++b) {
            const float *xs = x + ((size_t)b * c + ch) * inner;
            for (i = 0; i < inner; ++i) sq += (xs[i] - bmean[ch]) * (xs[i] - bmean[ch]);
        }
        bvar[ch] = sq / m;
        if (w > 0.0f && isfinite(bmean[ch]) && isfinite(bvar[ch])) {
            rmean[ch] = (1.0f - w) * rmean[ch] + w * bmean[ch];
            rvar[ch] = (1.0f - w) * rvar[ch] + w * (unbiased ? sq / (m - 1.0f) : bvar[ch]);
        }
        a = scale[ch] / sqrtf(bvar[ch] + eps);
        s = bias[ch] - bmean[ch] * a;
        for (b = 0; b < n; ++b) {
            const float *xs = x + ((size_t)b * c + ch) * inner;
            float *ys = y + ((size_t)b * c + ch) * inner;
            for (i = 0; i < inner; ++i) ys[i] = xs[i] * a + s;
        }
    }
}

/* The gradient through the batch statistics: with r = 1 / sqrt(bvar + eps), xh = (x - bmean) * r,
 * dx = scale * r * (dy - mean(dy) - xh * mean(dy * xh)) over each channel. dx may be dy or x. */
static inline void mt_batchnorm_train_grad_x(const float *dy, const float *x, const float *scale,
                                             const float *bmean, const float *bvar, float *dx, int n, int c,
                                             int inner, float eps)
{
    const float m = (float)n * (float)inner;
    int b, ch, i;
    for (ch = 0; ch < c; ++ch) {
        const float r = 1.0f / sqrtf(bvar[ch] + eps);
        float sg = 0.0f, sgx = 0.0f, mg, mgx;
        for (b = 0; b < n; ++b) {
            const float *g = dy + ((size_t)b * c + ch) * inner;
            const float *xs = x + ((size_t)b * c + ch) * inner;
            for (i = 0; i < inner; ++i) {
                sg += g[i];
                sgx += g[i] * (xs[i] - bmean[ch]) * r;
            }
        }
        mg = sg / m;
        mgx = sgx / m;
        for (b = 0; b < n; ++b) {
            const float *g = dy + ((size_t)b * c + ch) * inner;
            const float *xs = x + ((size_t)b * c + ch) * inner;
            float *d = dx + ((size_t)b * c + ch) * inner;
            for (i = 0; i < inner; ++i) d[i] = scale[ch] * r * (g[i] - mg - (xs[i] - bmean[ch]) * r * mgx);
        }
    }
}

#endif
