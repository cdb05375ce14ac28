/* The gradient of a per-channel bias (Conv, BatchNorm): the sum of dY over the batch and each
 * channel's plane. out[m] = keep * out[m] + scale * sum (keep = 0: plain store; see mt_update). */
#ifndef MT_CHANNEL_SUM_H
#define MT_CHANNEL_SUM_H
#include "../mt_common.h"

static inline void mt_channel_sum(const float *dY, float *out, int N, int M, int plane, float scale,
                                  float keep)
{
    int n, m, k;
    for (m = 0; m < M; ++m) {
        float acc = 0.0f;
        for (n = 0; n < N; ++n) {
            const float *dy = dY + ((size_t)n * M + m) * plane;
            for (k = 0; k < plane; ++k) acc += dy[k];
        }
        out[m] = mt_update(out[m], acc, scale, keep);
    }
}

#endif
