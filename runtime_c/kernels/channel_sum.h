/* The gradient of a per-channel bias (Conv, BatchNorm): the sum of dY over the batch and each
 * channel's plane. out[m] = keep * out[m] + scale * sum (keep = 0: plain store; see mt_update). */
#ifndef MT_CHANNEL_SUM_H
#define MT_CHANNEL_SUM_H
#include "../mt_common.h"
#if MT_SIMD
#include "vec.h"
#endif

/* One channel's sum: MT_VEC lanes added in lane order with a vector unit (as conv_tiles.h sums
 * weight gradients), else one running sum. */
static inline float mt_channel_total(const float *dY, int N, int M, int m, int plane)
{
    int n, k;
#if MT_SIMD
    mt_vec acc, v;
    mt_vset(&acc, 0.0f);
    for (n = 0; n < N; ++n) {
        for (k = 0; k < plane; k += MT_VEC) {
            mt_vload_row(&v, dY + ((size_t)n * M + m) * plane, k, plane);
            acc += v;
        }
    }
    return mt_lanes_sum(&acc);
#else
    float acc = 0.0f;
    for (n = 0; n < N; ++n) {
        for (k = 0; k < plane; ++k) acc += dY[((size_t)n * M + m) * plane + k];
    }
    return acc;
#endif
}

static inline void mt_channel_sum(const float *dY, float *out, int N, int M, int plane, float scale,
                                  float keep)
{
    int m;
    for (m = 0; m < M; ++m) out[m] = mt_update(out[m], mt_channel_total(dY, N, M, m, plane), scale, keep);
}

#endif
