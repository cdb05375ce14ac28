/* Gradient of broadcasting: y (the input's shape) = beta * y + scale * (sum of x over the broadcast
 * dims). x has `shape` (rank dims, n elements); sy are y's strides over that shape (0 where
 * broadcast). beta = 0 ignores y's old contents. */
#ifndef MT_SUM_TO_H
#define MT_SUM_TO_H
#include "../mt_common.h"

static inline void mt_sum_to(const float *x, float *y, int ny, int rank, const int32_t *shape,
                             const int32_t *sy, int n, float scale, float beta)
{
    static const int32_t zero[MT_MAX_RANK] = {0};
    int32_t idx[MT_MAX_RANK] = {0};
    size_t oy = 0, ox = 0;
    int i;
    if (beta == 0.0f) {
        for (i = 0; i < ny; ++i) y[i] = 0.0f;
        for (i = 0; i < n; ++i) {
            y[oy] += x[i];
            mt_next_index(rank, shape, idx, sy, zero, &oy, &ox);
        }
        if (scale != 1.0f)
            for (i = 0; i < ny; ++i) y[i] *= scale;
        return;
    }
    for (i = 0; i < ny; ++i) y[i] *= beta;
    for (i = 0; i < n; ++i) {
        y[oy] += scale * x[i];
        mt_next_index(rank, shape, idx, sy, zero, &oy, &ox);
    }
}

/* The common case, a broadcast along leading dims only (a bias over a batch): x is (rows, ny) and
 * y[i] = keep * y[i] + scale * (the sum of column i, in row order), stored through mt_update. */
static inline void mt_sum_rows(const float *x, float *y, int rows, int ny, float scale, float keep)
{
    int i, r;
    for (i = 0; i < ny; ++i) {
        float acc = x[i];
        for (r = 1; r < rows; ++r) acc += x[(size_t)r * ny + i];
        y[i] = mt_update(y[i], acc, scale, keep);
    }
}

#endif
