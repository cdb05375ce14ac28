/* Box copies between row-major arrays: Pad (and its gradient, a crop) and Concat. */
#ifndef MT_BOX_H
#define MT_BOX_H
#include "../mt_common.h"

/* Copy a box of `shape` (rank >= 1 dims) from src to dst, whose element strides are ss and ds.
 * The last dimension is contiguous in both, so each row is one memcpy. */
static inline void mt_copy_box(const float *src, const int32_t *ss, float *dst, const int32_t *ds,
                               int rank, const int32_t *shape)
{
    int32_t idx[MT_MAX_RANK] = {0};
    size_t os = 0, od = 0;
    size_t rows = 1, r;
    const size_t len = (size_t)shape[rank - 1];
    int d;
    for (d = 0; d < rank - 1; ++d) rows *= (size_t)shape[d];
    for (r = 0; r < rows; ++r) {
        memcpy(dst + od, src + os, sizeof(float) * len);
        mt_next_index(rank - 1, shape, idx, ss, ds, &os, &od);
    }
}

/* Constant pad (negative pads crop): y[0..ny) = *value (0 if NULL), then the box of `shape` at
 * x + xoff is copied to y + yoff. ny = 0 skips the fill (nothing padded); rank = 0 skips the copy
 * (empty box). */
static inline void mt_pad(const float *x, const int32_t *sx, float *y, const int32_t *sy, int ny,
                          const float *value, int rank, const int32_t *shape, int xoff, int yoff)
{
    const float v = value ? *value : 0.0f;
    int i;
    for (i = 0; i < ny; ++i) y[i] = v;
    if (rank > 0) mt_copy_box(x + xoff, sx, y + yoff, sy, rank, shape);
}

#endif
