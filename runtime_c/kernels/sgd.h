/* One SGD step with PyTorch's semantics (torch.optim.SGD, dampening 0):
 *   g = grad + weight_decay * w
 *   buf = momentum * buf + g          (buf starts at 0, so the first step sets buf = g)
 *   g = nesterov ? g + momentum * buf : buf
 *   w -= lr * g
 * buf may be NULL when momentum == 0. */
#ifndef MT_SGD_H
#define MT_SGD_H
#include "../mt_common.h"

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

#endif
