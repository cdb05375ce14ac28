/* Elementwise int8 kernels of the frozen layers: QLinearAdd (numpy broadcasting) and the
 * rescaling copy of QLinearConcat. */
#ifndef MT_ELTWISE_S8_H
#define MT_ELTWISE_S8_H
#include "../mt_common.h"
#include "quant_s8.h"

/* Y = zy + (ma (a - za) + mb (b - zb)) * 2^-shift, rounded once, saturated to int8: the two real
 * multipliers share one shift (codegen/requant.py, shared). */
typedef struct {
    int32_t za, ma, zb, mb, zy;
    int shift;
} mt_add_requant;

/* rank == 0: A, B and Y have the same shape; else A and B are walked over Y's `shape` with
 * element strides sa, sb (0 along broadcast dims). */
static inline void mt_add_s8(const int8_t *A, const int8_t *B, int8_t *Y, int rank, const int32_t *shape,
                             const int32_t *sa, const int32_t *sb, size_t count, mt_add_requant q)
{
    int32_t idx[MT_MAX_RANK] = {0};
    size_t i, oa = 0, ob = 0;
    for (i = 0; i < count; ++i) {
        const int64_t p = (int64_t)((int32_t)A[oa] - q.za) * q.ma + (int64_t)((int32_t)B[ob] - q.zb) * q.mb;
        Y[i] = mt_saturate_s8(q.zy + mt_round_shift(p, q.shift), -128, 127);
        if (rank) {
            mt_next_index(rank, shape, idx, sa, sb, &oa, &ob);
        } else {
            ++oa;
            ++ob;
        }
    }
}

/* Y[r * stride + k] = requant(X[r * len + k] - zx) for r < rows, k < len: one input's slab of a
 * concatenation, moved to the output's scale and zero point. */
static inline void mt_rescale_s8(const int8_t *MT_RESTRICT X, int32_t zx, int8_t *MT_RESTRICT Y, size_t rows,
                                 size_t len, size_t stride, mt_requant q)
{
    size_t r, k;
    for (r = 0; r < rows; ++r)
        for (k = 0; k < len; ++k) Y[r * stride + k] = mt_requant_s8((int32_t)X[r * len + k] - zx, &q, 0);
}

#endif
