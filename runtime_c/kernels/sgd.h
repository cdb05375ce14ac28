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

#endif
