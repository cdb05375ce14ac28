/* Softmax and LogSoftmax over one axis. Tensors are viewed as (outer, n, inner), the axis is n. */
#ifndef MT_SOFTMAX_H
#define MT_SOFTMAX_H
#include "../mt_common.h"

static inline void mt_softmax_any(const float *x, float *y, int outer, int n, int inner, int log_out)
{
    int o, i, j;
    for (o = 0; o < outer; ++o) {
        for (j = 0; j < inner; ++j) {
            const float *xs = x + (size_t)o * n * inner + j;
            float *ys = y + (size_t)o * n * inner + j;
            float mx = xs[0], sum = 0.0f;
            for (i = 1; i < n; ++i) mx = xs[(size_t)i * inner] > mx ? xs[(size_t)i * inner] : mx;
            for (i = 0; i < n; ++i) sum += expf(xs[(size_t)i * inner] - mx);
            if (log_out) { /* (x - max) - log(sum): max + log(sum) first would round away small terms */
                const float lse = logf(sum);
                for (i = 0; i < n; ++i) ys[(size_t)i * inner] = (xs[(size_t)i * inner] - mx) - lse;
            } else {
                for (i = 0; i < n; ++i) ys[(size_t)i * inner] = expf(xs[(size_t)i * inner] - mx) / sum;
            }
        }
    }
}

static inline void mt_softmax(const float *x, float *y, int outer, int n, int inner)
{
    mt_softmax_any(x, y, outer, n, inner, 0);
}

static inline void mt_log_softmax(const float *x, float *y, int outer, int n, int inner)
{
    mt_softmax_any(x, y, outer, n, inner, 1);
}

/* From the forward output y: softmax dx = y * (dy - sum(dy * y)); log-softmax dx = dy - exp(y) * sum(dy). */
static inline void mt_softmax_grad_any(const float *dy, const float *y, float *dx, int outer, int n,
                                       int inner, int log_out)
{
    int o, i, j;
    for (o = 0; o < outer; ++o) {
        for (j = 0; j < inner; ++j) {
            const size_t base = (size_t)o * n * inner + j;
            float s = 0.0f;
            for (i = 0; i < n; ++i) {
                const size_t k = base + (size_t)i * inner;
                s += log_out ? dy[k] : dy[k] * y[k];
            }
            for (i = 0; i < n; ++i) {
                const size_t k = base + (size_t)i * inner;
                dx[k] = log_out ? dy[k] - expf(y[k]) * s : y[k] * (dy[k] - s);
            }
        }
    }
}

static inline void mt_softmax_grad(const float *dy, const float *y, float *dx, int outer, int n, int inner)
{
    mt_softmax_grad_any(dy, y, dx, outer, n, inner, 0);
}

static inline void mt_log_softmax_grad(const float *dy, const float *y, float *dx, int outer, int n,
                                       int inner)
{
    mt_softmax_grad_any(dy, y, dx, outer, n, inner, 1);
}

#endif
