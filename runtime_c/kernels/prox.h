/* FedProx: the gradient of mu/2 * ||w - w_round||^2 (w_round: the weights at the start of the
 * federated round), added to the loss gradient before the optimizer uses it, as PyTorch's FedProx
 * adds the term to the loss. */
#ifndef MT_PROX_H
#define MT_PROX_H
#include "../mt_common.h"

/* g += mu * (w - w_round) */
static inline void mt_prox(float *g, const float *w, const float *w_round, int n, float mu)
{
    int i;
    for (i = 0; i < n; ++i) g[i] += mu * (w[i] - w_round[i]);
}

/* w += k * w_round: the w_round part of an update whose producer already scaled w by
 * (1 - lr * mu) (k = lr * mu). */
static inline void mt_prox_shift(float *w, const float *w_round, int n, float k)
{
    int i;
    for (i = 0; i < n; ++i) w[i] += k * w_round[i];
}

#endif
