/* Requantization of the int8 kernels (codegen/requant.py documents the method): an int32
 * accumulator times a real multiplier M * 2^-n, rounded half to even, plus the output zero point,
 * saturated to [lo, hi]. Integers only, the same bits on every core. */
#ifndef MT_QUANT_S8_H
#define MT_QUANT_S8_H
#include "../mt_common.h"

/* An output's requantization: multipliers and shifts per output channel (per_channel = 1) or one
 * for the whole tensor (per_channel = 0); zero point and saturation bounds. */
typedef struct {
    const int32_t *mult;
    const int32_t *shift;
    int per_channel;
    int32_t zp, lo, hi;
} mt_requant;

/* p * 2^-n rounded half to even, as onnxruntime rounds (arithmetic shift of a signed value, as
 * gcc and clang do), n in 1..62. */
static inline int64_t mt_round_shift(int64_t p, int n)
{
    const int64_t q = p >> n, rest = p - q * ((int64_t)1 << n), half = (int64_t)1 << (n - 1);
    return q + (rest > half || (rest == half && (q & 1)));
}

static inline int8_t mt_saturate_s8(int64_t v, int32_t lo, int32_t hi)
{
    return (int8_t)(v < lo ? lo : v > hi ? hi : v);
}

/* The int8 output of accumulator acc in channel c. */
static inline int8_t mt_requant_s8(int32_t acc, const mt_requant *q, int c)
{
    const int k = q->per_channel ? c : 0;
    return mt_saturate_s8(q->zp + mt_round_shift((int64_t)acc * q->mult[k], q->shift[k]), q->lo, q->hi);
}

#endif
