/* One SGD step with PyTorch's semantics (torch.optim.SGD, dampening 0):
 *   g = grad + weight_decay * w
 *   buf = momentum * buf + g          (buf starts at 0, so the first step sets buf = g)
 *   g = nesterov ? g + momentum * buf : buf
 *   w -= lr * g
 * buf may be NULL when momentum == 0. */
#ifndef MT_SGD_H
#define MT_SGD_H
#include "../mt_common.h"
#include "prox.h"
#include "dropout.h"

static inline void mt_sgd(float *w, const float *grad, float *buf, int n, float lr, float momentum,
                          float weight_decay, int nesterov)
{
    int i;
    for (i = 0; i < n; ++i) {
        float g = grad[i] + weight_decay * w[i];
        if (buf) {
            buf[i] = momentum * buf[i] + g;
            g = nesterov ? g + momentum * buf[i] : buf[i];
        }
        w[i] -= lr * g;
    }
}

/* The rest of a momentum step whose gradient was already folded into buf (buf = momentum * buf
 * + grad, by the kernel that computed the gradient): buf += weight_decay * w; w -= lr * buf. */
static inline void mt_sgd_apply(float *w, float *buf, int n, float lr, float weight_decay)
{
    int i;
    for (i = 0; i < n; ++i) {
        if (weight_decay != 0.0f) buf[i] += weight_decay * w[i];
        w[i] -= lr * buf[i];
    }
}

/* SGD on the integers of a weight or bias that trains on its grid (generate --update int8; its
 * gradient g is in units of one integer step: qas.h). The step -lr * g (with weight decay,
 * momentum, Nesterov as mt_sgd) is rounded stochastically: floor(u + step) with u uniform in
 * [0, 1) from the xorshift32 stream (set_seed), so its expected value is the float step and
 * steps smaller than one integer still add up; the sum is saturated to [lo, hi]. Rounding to
 * nearest would drop every step below one half, which at a fine-tuning learning rate is most. */
static inline int32_t mt_int_step(int32_t w, float step, int32_t lo, int32_t hi, uint32_t *rng)
{
    const float u = (float)(mt_xorshift32(rng) >> 8) * (1.0f / 16777216.0f);
    float s = floorf(u + step);
    int64_t v;
    if (!(s == s)) s = 0.0f; /* NaN: no step */
    s = s < -2147483648.0f ? -2147483648.0f : s > 2147483520.0f ? 2147483520.0f : s;
    v = (int64_t)w + (int64_t)s;
    return (int32_t)(v < lo ? lo : v > hi ? hi : v);
}

static inline int32_t mt_sgd_int_step(int32_t w, float g, float *buf, float lr, float momentum, float weight_decay,
                                      int nesterov, int32_t lo, int32_t hi, uint32_t *rng)
{
    g += weight_decay * (float)w;
    if (buf) {
        *buf = momentum * *buf + g;
        g = nesterov ? g + momentum * *buf : *buf;
    }
    return mt_int_step(w, -(lr * g), lo, hi, rng);
}

/* An int8 weight: saturated to [-128, 127]. buf may be NULL when momentum == 0. */
static inline void mt_sgd_s8(int8_t *w, const float *grad, float *buf, int n, float lr, float momentum,
                             float weight_decay, int nesterov, uint32_t *rng)
{
    int i;
    for (i = 0; i < n; ++i)
        w[i] = (int8_t)mt_sgd_int_step(w[i], grad[i], buf ? buf + i : NULL, lr, momentum, weight_decay, nesterov,
                                       -128, 127, rng);
}

/* An int32 bias: saturated to [-limit, limit] (the int8 sums fit beside it: codegen/ops/_qlinear.py
 * BIAS_LIMIT). */
static inline void mt_sgd_s32(int32_t *w, const float *grad, float *buf, int n, float lr, float momentum,
                              float weight_decay, int nesterov, int32_t limit, uint32_t *rng)
{
    int i;
    for (i = 0; i < n; ++i)
        w[i] = mt_sgd_int_step(w[i], grad[i], buf ? buf + i : NULL, lr, momentum, weight_decay, nesterov, -limit,
                               limit, rng);
}

#endif
