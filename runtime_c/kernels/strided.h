/* Strided gather: y (row-major over `shape`, rank dims, n elements) = scale * x read with element
 * strides sx. Transpose uses permuted strides, broadcasting uses 0 along the broadcast dims. */
#ifndef MT_STRIDED_H
#define MT_STRIDED_H
#include "../mt_common.h"

static inline void mt_gather_strided(const float *x, float *y, int n, int rank, const int32_t *shape,
                                     const int32_t *sx, float scale)
{
    static const int32_t zero[MT_MAX_RANK] = {0};
    int32_t idx[MT_MAX_RANK] = {0};
    size_t ox = 0, unused = 0;
    int i;
    for (i = 0; i < n; ++i) {
        y[i] = scale * x[ox];
        mt_next_index(rank, shape, idx, sx, zero, &ox, &unused);
    }
}

#endif
