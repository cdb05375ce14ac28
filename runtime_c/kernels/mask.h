/* 1-bit masks of where a gradient passes, computed in the forward pass so the backward keeps
 * 1 bit per element instead of an activation. M: bit i in byte i / 8, least significant first. */
#ifndef MT_MASK_H
#define MT_MASK_H
#include "../mt_common.h"

/* M (n bits) = -128 < Y < 127: an int8 output not at a bound (where its quantizer saturated or
 * its folded ReLU/Clip cut). */
static inline void mt_mask_s8(const int8_t *MT_RESTRICT Y, uint8_t *MT_RESTRICT M, int n)
{
    int i;
    for (i = 0; i < (n + 7) / 8; ++i) M[i] = 0;
    for (i = 0; i < n; ++i) M[i >> 3] |= (uint8_t)((Y[i] > -128 && Y[i] < 127) << (i & 7));
}

/* dX = dY where the mask bit is set, else 0. */
static inline void mt_masked(const float *dY, const uint8_t *MT_RESTRICT M, float *dX, int n)
{
    int i;
    for (i = 0; i < n; ++i) dX[i] = (M[i >> 3] >> (i & 7)) & 1 ? dY[i] : 0.0f;
}

/* M (n bits) = lo < Y < hi (an absent bound: no limit): where a Clip (ReLU6) passes its gradient. */
static inline void mt_mask_inside(const float *MT_RESTRICT Y, uint8_t *MT_RESTRICT M, int n, const float *lo,
                                  const float *hi)
{
    const float l = lo ? *lo : 0.0f, h = hi ? *hi : 0.0f;
    int i;
    for (i = 0; i < (n + 7) / 8; ++i) M[i] = 0;
    for (i = 0; i < n; ++i) M[i >> 3] |= (uint8_t)(((!lo || Y[i] > l) && (!hi || Y[i] < h)) << (i & 7));
}

/* M (n bits) = Y > 0: where a ReLU passes its gradient (NaN: no). */
static inline void mt_mask_positive(const float *MT_RESTRICT Y, uint8_t *MT_RESTRICT M, int n)
{
    int i;
    for (i = 0; i < (n + 7) / 8; ++i) M[i] = 0;
    for (i = 0; i < n; ++i) M[i >> 3] |= (uint8_t)((Y[i] > 0.0f) << (i & 7));
}

#endif
