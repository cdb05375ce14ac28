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

/* Gelu: y = x * Phi(x) = x / 2 * (1 + erf(x / sqrt 2)) (approximate = 0), or PyTorch's tanh
 * approximation x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) (approximate = 1). */
#define MT_SQRT1_2 0.707106781186547524f
#define MT_GELU_BETA 0.797884560802865356f /* sqrt(2 / pi) */
#define MT_GELU_KAPPA 0.044715f
#define MT_INV_SQRT_2PI 0.398942280401432678f
#define MT_2_SQRTPI 1.12837916709551257f /* 2 / sqrt(pi) */

static inline void mt_gelu(const float *x, float *y, int n, int approximate)
{
    int i;
    for (i = 0; i < n; ++i) {
        float v = x[i];
        y[i] = approximate ? 0.5f * v * (1.0f + tanhf(MT_GELU_BETA * (v + MT_GELU_KAPPA * (v * v * v))))
                           : 0.5f * v * (1.0f + erff(v * MT_SQRT1_2));
    }
}

/* dx = dy * (Phi(x) + x * phi(x)), or the tanh form's derivative, from the input x (as PyTorch). */
static inline void mt_gelu_grad(const float *dy, const float *x, float *dx, int n, int approximate)
{
    int i;
    for (i = 0; i < n; ++i) {
        float v = x[i], d;
        if (approximate) {
            float t = tanhf(MT_GELU_BETA * (v + MT_GELU_KAPPA * (v * v * v)));
            d = 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * MT_GELU_BETA * (1.0f + 3.0f * MT_GELU_KAPPA * (v * v));
        } else {
            d = 0.5f * (1.0f + erff(v * MT_SQRT1_2)) + v * (expf(-0.5f * v * v) * MT_INV_SQRT_2PI);
        }
        dx[i] = dy[i] * d;
    }
}

static inline void mt_erf(const float *x, float *y, int n)
{
    int i;
    for (i = 0; i < n; ++i) y[i] = erff(x[i]);
}

/* dx = dy * 2 / sqrt(pi) * exp(-x^2), from the input x. */
static inline void mt_erf_grad(const float *dy, const float *x, float *dx, int n)
{
    int i;
    for (i = 0; i < n; ++i) dx[i] = dy[i] * (MT_2_SQRTPI * expf(-(x[i] * x[i])));
}

/* Elu (gamma = 1) and Selu: y = gamma * x for x > 0, gamma * alpha * (exp(x) - 1) otherwise. */
static inline void mt_elu(const float *x, float *y, int n, float alpha, float gamma)
{
    const float neg = alpha * gamma;
    int i;
    for (i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? gamma * x[i] : expm1f(x[i]) * neg;
}

/* from_y: s is the output y (valid for alpha >= 0 and gamma > 0, then y > 0 exactly where x > 0
 * and the derivative for x <= 0 is y + alpha * gamma); else s is the input x. */
static inline void mt_elu_grad(const float *dy, const float *s, float *dx, int n, float alpha, float gamma,
                               int from_y)
{
    const float neg = alpha * gamma;
    int i;
    for (i = 0; i < n; ++i) {
        if (s[i] > 0.0f) dx[i] = dy[i] * gamma;
        else dx[i] = dy[i] * (from_y ? s[i] + neg : expf(s[i]) * neg);
    }
}

/* Softplus: y = log(1 + exp(x)); x itself above 20 (PyTorch's threshold: the same float). */
static inline void mt_softplus(const float *x, float *y, int n)
{
    int i;
    for (i = 0; i < n; ++i) y[i] = x[i] > 20.0f ? x[i] : log1pf(expf(x[i]));
}

/* dx = dy * sigmoid(x) = dy * (1 - exp(-y)), from the output y. */
static inline void mt_softplus_grad(const float *dy, const float *y, float *dx, int n)
{
    int i;
    for (i = 0; i < n; ++i) dx[i] = -dy[i] * expm1f(-y[i]);
}

static inline void mt_exp(const float *x, float *y, int n)
{
    int i;
    for (i = 0; i < n; ++i) y[i] = expf(x[i]);
}

/* dx = dy * y, from the output y. */
static inline void mt_exp_grad(const float *dy, const float *y, float *dx, int n)
{
    int i;
    for (i = 0; i < n; ++i) dx[i] = dy[i] * y[i];
}

static inline void mt_log(const float *x, float *y, int n)
{
    int i;
    for (i = 0; i < n; ++i) y[i] = logf(x[i]);
}

/* dx = dy / x, from the input x. */
static inline void mt_log_grad(const float *dy, const float *x, float *dx, int n)
{
    int i;
    for (i = 0; i < n; ++i) dx[i] = dy[i] / x[i];
}

static inline void mt_sqrt(const float *x, float *y, int n)
{
    int i;
    for (i = 0; i < n; ++i) y[i] = sqrtf(x[i]);
}

/* dx = dy / (2 y), from the output y. */
static inline void mt_sqrt_grad(const float *dy, const float *y, float *dx, int n)
{
    int i;
    for (i = 0; i < n; ++i) dx[i] = dy[i] / (2.0f * y[i]);
}

/* x^e; e = 2 and 0.5 (x ** 2, x ** 0.5) as x * x and sqrt, as PyTorch computes them. */
static inline float mt_powf(float x, float e)
{
    return e == 2.0f ? x * x : e == 0.5f ? sqrtf(x) : powf(x, e);
}

/* Pow with constant exponents e (ne of them, repeating along x: one, or x's trailing dims). */
static inline void mt_pow(const float *x, float *y, int n, const float *e, int ne)
{
    int i, k = 0;
    for (i = 0; i < n; ++i) {
        y[i] = mt_powf(x[i], e[k]);
        if (++k == ne) k = 0;
    }
}

/* dx = dy * e * x^(e - 1) (0 for e = 0), from the input x. */
static inline void mt_pow_grad(const float *dy, const float *x, float *dx, int n, const float *e, int ne)
{
    int i, k = 0;
    for (i = 0; i < n; ++i) {
        dx[i] = e[k] == 0.0f ? 0.0f : dy[i] * (e[k] * mt_powf(x[i], e[k] - 1.0f));
        if (++k == ne) k = 0;
    }
}

/* Neg (its gradient is Neg too). */
static inline void mt_neg(const float *x, float *y, int n)
{
    int i;
    for (i = 0; i < n; ++i) y[i] = -x[i];
}

static inline void mt_abs(const float *x, float *y, int n)
{
    int i;
    for (i = 0; i < n; ++i) y[i] = fabsf(x[i]);
}

/* dx = dy * sign(x), 0 at x = 0 (as PyTorch), from the input x. */
static inline void mt_abs_grad(const float *dy, const float *x, float *dx, int n)
{
    int i;
    for (i = 0; i < n; ++i) dx[i] = x[i] > 0.0f ? dy[i] : x[i] < 0.0f ? -dy[i] : 0.0f;
}

static inline void mt_reciprocal(const float *x, float *y, int n)
{
    int i;
    for (i = 0; i < n; ++i) y[i] = 1.0f / x[i];
}

/* dx = -dy * y^2, from the output y. */
static inline void mt_reciprocal_grad(const float *dy, const float *y, float *dx, int n)
{
    int i;
    for (i = 0; i < n; ++i) dx[i] = -dy[i] * (y[i] * y[i]);
}

#endif
