/* LayerNormalization: each of `outer` rows of n values is normalised with its own mean and
 * inverse standard deviation r = 1 / sqrt(var + eps) (biased variance), then scaled and shifted
 * per position: y = (x - mean) * r * scale + bias. scale, bias and dscale hold n values. The
 * backward reads the row statistics the forward stored (mean, inv_std: `outer` values each). */
#ifndef MT_LAYERNORM_H
#define MT_LAYERNORM_H
#include "../mt_common.h"

/* bias may be NULL (no shift); mean and inv_std may be NULL (not kept). y may be x. */
static inline void mt_layernorm(const float *x, const float *scale, const float *bias, float *y,
                                float *mean, float *inv_std, int outer, int n, float eps)
{
    int o, i;
    for (o = 0; o < outer; ++o) {
        const float *xs = x + (size_t)o * n;
        float *ys = y + (size_t)o * n;
        float sum = 0.0f, sq = 0.0f, mu, r;
        for (i = 0; i < n; ++i) sum += xs[i];
        mu = sum / (float)n;
        for (i = 0; i < n; ++i) sq += (xs[i] - mu) * (xs[i] - mu);
        r = 1.0f / sqrtf(sq / (float)n + eps);
        if (mean) mean[o] = mu;
        if (inv_std) inv_std[o] = r;
        for (i = 0; i < n; ++i) ys[i] = (xs[i] - mu) * r * scale[i] + (bias ? bias[i] : 0.0f);
    }
}

/* With xh = (x - mean) * r and g = dy * scale: dx = r * (g - mean(g) - xh * mean(g * xh)) over
 * each row. dx may be dy or x (each element is read before it is written). */
static inline void mt_layernorm_grad_x(const float *dy, const float *x, const float *scale, const float *mean,
                                       const float *inv_std, float *dx, int outer, int n)
{
    int o, i;
    for (o = 0; o < outer; ++o) {
        const float *g = dy + (size_t)o * n, *xs = x + (size_t)o * n;
        float *d = dx + (size_t)o * n;
        const float mu = mean[o], r = inv_std[o];
        float sg = 0.0f, sgx = 0.0f, mg, mgx;
        for (i = 0; i < n; ++i) {
            sg += g[i] * scale[i];
            sgx += g[i] * scale[i] * (xs[i] - mu) * r;
        }
        mg = sg / (float)n;
        mgx = sgx / (float)n;
        for (i = 0; i < n; ++i) d[i] = r * (g[i] * scale[i] - mg - (xs[i] - mu) * r * mgx);
    }
}

/* dscale[i] = sum over the rows of dy * xh, stored through mt_update (s, keep). */
static inline void mt_layernorm_grad_scale(const float *dy, const float *x, const float *mean,
                                           const float *inv_std, float *dscale, int outer, int n, float s,
                                           float keep)
{
    int o, i;
    for (i = 0; i < n; ++i) {
        float sum = 0.0f;
        for (o = 0; o < outer; ++o) {
            const size_t k = (size_t)o * n + i;
            sum += dy[k] * (x[k] - mean[o]) * inv_std[o];
        }
        dscale[i] = mt_update(dscale[i], sum, s, keep);
    }
}

#endif
