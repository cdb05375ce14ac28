/* Elementwise activations and their gradients. x, y, dy, dx are (n). */
#ifndef MT_UNARY_H
#define MT_UNARY_H
#include "../mt_common.h"

static inline void mt_relu(const float *x, float *y, int n)
{
    int i;
    for (i = 0; i < n; ++i) y[i] = x[i] < 0.0f ? 0.0f : x[i]; /* NaN passes, as in PyTorch */
}

/* dx = dy where s > 0; s is the input x or the output y (positive at the same places). */
static inline void mt_relu_grad(const float *dy, const float *x, float *dx, int n)
{
    int i;
    for (i = 0; i < n; ++i) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
}

static inline void mt_leaky_relu(const float *x, float *y, int n, float alpha)
{
    int i;
    for (i = 0; i < n; ++i) y[i] = x[i] >= 0.0f ? x[i] : alpha * x[i];
}

/* s: x, or y when alpha >= 0 (then y > 0 exactly where x > 0). */
static inline void mt_leaky_relu_grad(const float *dy, const float *x, float *dx, int n, float alpha)
{
    int i;
    for (i = 0; i < n; ++i) dx[i] = x[i] > 0.0f ? dy[i] : alpha * dy[i];
}

/* Stable for large |x|: exp only of a non-positive number. */
static inline void mt_sigmoid(const float *x, float *y, int n)
{
    int i;
    for (i = 0; i < n; ++i) {
        if (x[i] >= 0.0f) {
            y[i] = 1.0f / (1.0f + expf(-x[i]));
        } else {
            float e = expf(x[i]);
            y[i] = e / (1.0f + e);
        }
    }
}

/* dx = dy * y * (1 - y), from the forward output y. */
static inline void mt_sigmoid_grad(const float *dy, const float *y, float *dx, int n)
{
    int i;
    for (i = 0; i < n; ++i) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

static inline void mt_tanh(const float *x, float *y, int n)
{
    int i;
    for (i = 0; i < n; ++i) y[i] = tanhf(x[i]);
}

/* dx = dy * (1 - y^2), from the forward output y. */
static inline void mt_tanh_grad(const float *dy, const float *y, float *dx, int n)
{
    int i;
    for (i = 0; i < n; ++i) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}

/* Clip: y = min(max(x, *lo), *hi); a NULL bound is absent. hi wins when *lo > *hi (numpy.clip). */
static inline void mt_clip(const float *x, float *y, int n, const float *lo, const float *hi)
{
    const float l = lo ? *lo : 0.0f, h = hi ? *hi : 0.0f;
    int i;
    for (i = 0; i < n; ++i) {
        float v = (lo && x[i] < l) ? l : x[i];
        y[i] = (hi && v > h) ? h : v;
    }
}

/* dx = dy where *lo < x < *hi, strictly: PyTorch's hardtanh/relu6 gradient. */
/* s: x, or y = clip(x) (strictly inside (lo, hi) exactly where x is). */
static inline void mt_clip_grad(const float *dy, const float *x, float *dx, int n, const float *lo,
                                const float *hi)
{
    const float l = lo ? *lo : 0.0f, h = hi ? *hi : 0.0f;
    int i;
    for (i = 0; i < n; ++i) dx[i] = ((!lo || x[i] > l) && (!hi || x[i] < h)) ? dy[i] : 0.0f;
}

/* y = max(0, min(1, alpha * x + beta)). */
static inline void mt_hard_sigmoid(const float *x, float *y, int n, float alpha, float beta)
{
    int i;
    for (i = 0; i < n; ++i) {
        float v = alpha * x[i] + beta;
        y[i] = v > 0.0f ? (v < 1.0f ? v : 1.0f) : 0.0f;
    }
}

/* dx = alpha * dy where 0 < alpha * x + beta < 1, strictly (as PyTorch's hardsigmoid). */
static inline void mt_hard_sigmoid_grad(const float *dy, const float *x, float *dx, int n, float alpha,
                                        float beta)
{
    int i;
    for (i = 0; i < n; ++i) {
        float v = alpha * x[i] + beta;
        dx[i] = (v > 0.0f && v < 1.0f) ? alpha * dy[i] : 0.0f;
    }
}

/* y = x * hardsigmoid(x) with alpha = 1/6, beta = 1/2, i.e. x * clamp(x + 3, 0, 6) / 6. */
static inline void mt_hard_swish(const float *x, float *y, int n)
{
    int i;
    for (i = 0; i < n; ++i) {
        float v = x[i] + 3.0f;
        y[i] = x[i] * (v > 0.0f ? (v < 6.0f ? v : 6.0f) : 0.0f) / 6.0f;
    }
}

/* dx = 0 for x <= -3, dy * (x / 3 + 1/2) for -3 < x < 3, dy for x >= 3 (PyTorch's boundaries). */
static inline void mt_hard_swish_grad(const float *dy, const float *x, float *dx, int n)
{
    int i;
    for (i = 0; i < n; ++i) {
        if (x[i] <= -3.0f) dx[i] = 0.0f;
        else if (x[i] < 3.0f) dx[i] = dy[i] * (x[i] / 3.0f + 0.5f);
        else dx[i] = dy[i];
    }
}

#endif
