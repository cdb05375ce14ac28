/* Add/Sub/Mul/Div with numpy broadcasting. The output y has `shape` (rank dims); sa/sb are the
 * element strides of a and b over that shape, 0 along broadcast dimensions. */
#ifndef MT_BINARY_H
#define MT_BINARY_H
#include "../mt_common.h"

#define MT_BINARY(NAME, EXPR)                                                                     \
    static inline void NAME(const float *a, const float *b, float *y, int rank,                   \
                            const int32_t *shape, const int32_t *sa, const int32_t *sb, int n)    \
    {                                                                                             \
        int32_t idx[MT_MAX_RANK] = {0};                                                           \
        size_t oa = 0, ob = 0;                                                                    \
        int i;                                                                                    \
        if (rank == 0) {                                                                          \
            for (i = 0; i < n; ++i) { float u = a[i], v = b[i]; y[i] = (EXPR); }                  \
            return;                                                                               \
        }                                                                                         \
        for (i = 0; i < n; ++i) {                                                                 \
            float u = a[oa], v = b[ob];                                                           \
            y[i] = (EXPR);                                                                        \
            mt_next_index(rank, shape, idx, sa, sb, &oa, &ob);                                    \
        }                                                                                         \
    }

/* rank == 0 means "same shape, no broadcasting": a plain loop over n elements. */
MT_BINARY(mt_add, u + v)
MT_BINARY(mt_sub, u - v)
MT_BINARY(mt_mul, u * v)
MT_BINARY(mt_div, u / v)

#endif
