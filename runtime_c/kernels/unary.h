/* Elementwise activations and their gradients. x, y, dy, dx are (n). */
#ifndef MT_UNARY_H
#define MT_UNARY_H
#include "../mt_common.h"

static inline void mt_relu(const float *x, float *y, int n)
{
    int i;
    for (i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* dx = dy where x > 0. */
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

#endif
