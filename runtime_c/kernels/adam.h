/* One Adam / AdamW step with PyTorch's semantics (torch.optim.Adam / AdamW, amsgrad off):
 *   adam:  g = grad + weight_decay * w          adamw: w *= 1 - lr * weight_decay; g = grad
 *   m += (1 - beta1) * (g - m);  v = beta2 * v + (1 - beta2) * g^2
 *   w -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 * `step` is t, counted from 1. The bias corrections are computed in double, as PyTorch does. */
#ifndef MT_ADAM_H
#define MT_ADAM_H
#include "../mt_common.h"
#include "prox.h"

static inline void mt_adam(float *w, const float *grad, float *m, float *v, int n, float lr,
                           float beta1, float beta2, float eps, float weight_decay, int decoupled,
                           uint32_t step)
{
    const float step_size = (float)((double)lr / (1.0 - pow((double)beta1, (double)step)));
    const float bc2_sqrt = (float)sqrt(1.0 - pow((double)beta2, (double)step));
    const float shrink = (float)(1.0 - (double)lr * (double)weight_decay);
    int i;
    for (i = 0; i < n; ++i) {
        float g = grad[i];
        if (decoupled)
            w[i] *= shrink;
        else
            g += weight_decay * w[i];
        m[i] += (1.0f - beta1) * (g - m[i]);
        v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
        w[i] -= step_size * (m[i] / (sqrtf(v[i]) / bc2_sqrt + eps));
    }
}

#endif
