/* Dropout in training mode: a deterministic PRNG (xorshift32, Marsaglia 2003: integer shifts and
 * xors only, so every core draws the same stream from the same seed) keeps each element with
 * probability 1 - ratio; the kept ones are scaled by 1 / (1 - ratio). The mask is kept as bits
 * (M: bit i in byte i / 8, least significant first) for the backward. */
#ifndef MT_DROPOUT_H
#define MT_DROPOUT_H
#include "../mt_common.h"

/* The next number of the stream; *state is never 0 (set_seed maps 0 to another seed). */
static inline uint32_t mt_xorshift32(uint32_t *state)
{
    uint32_t s = *state;
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    *state = s;
    return s;
}

/* Element i is kept when the top 24 bits of its draw are >= threshold (= ceil(ratio * 2^24)):
 * Y = kept ? X * scale : 0, one draw per element in order. Y may be X. */
static inline void mt_dropout(const float *X, float *Y, uint8_t *MT_RESTRICT M, int n, uint32_t threshold,
                              float scale, uint32_t *state)
{
    int i;
    for (i = 0; i < (n + 7) / 8; ++i) M[i] = 0;
    for (i = 0; i < n; ++i) {
        const int keep = (mt_xorshift32(state) >> 8) >= threshold;
        M[i >> 3] |= (uint8_t)(keep << (i & 7));
        Y[i] = keep ? X[i] * scale : 0.0f;
    }
}

/* dX = dY * scale where the mask bit is set, else 0. dX may be dY. */
static inline void mt_dropout_grad(const float *dY, const uint8_t *MT_RESTRICT M, float *dX, int n, float scale)
{
    int i;
    for (i = 0; i < n; ++i) dX[i] = (M[i >> 3] >> (i & 7)) & 1 ? dY[i] * scale : 0.0f;
}

#endif
