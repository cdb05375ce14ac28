/* Gradient accumulation over micro-batches: acc = (first ? 0 : acc) + scale * g. */
#ifndef MT_ACCUMULATE_H
#define MT_ACCUMULATE_H
#include "../mt_common.h"

static inline void mt_accumulate(float *acc, const float *g, int n, float scale, int first)
{
    int i;
    if (first)
        for (i = 0; i < n; ++i) acc[i] = scale * g[i];
    else
        for (i = 0; i < n; ++i) acc[i] += scale * g[i];
}

#endif
