/* Indexing and selection: Gather, Slice, Where and their gradients (the gradients of Slice and
 * Split zero-fill with mt_zero, then copy; contiguous rows go through box.h's mt_copy_box). Index
 * arrays and strides are compile-time constants. */
#ifndef MT_INDEX_H
#define MT_INDEX_H
#include "../mt_common.h"
#include "box.h"

static inline void mt_zero(float *y, int n)
{
    memset(y, 0, sizeof(float) * (size_t)n);
}

/* x is (outer, n, inner), y is (outer, count, inner): y[o, k, :] = x[o, idx[k], :], 0 <= idx[k] < n. */
static inline void mt_gather(const float *x, float *y, int outer, int n, const int32_t *idx, int count, int inner)
{
    const size_t row = sizeof(float) * (size_t)inner;
    int o, k;
    for (o = 0; o < outer; ++o)
        for (k = 0; k < count; ++k)
            memcpy(y + ((size_t)o * count + k) * inner, x + ((size_t)o * n + idx[k]) * inner, row);
}

/* Gather's gradient: dx = 0, then dx[o, idx[k], :] += dy[o, k, :] (a repeated index accumulates). */
static inline void mt_gather_grad(const float *dy, float *dx, int outer, int n, const int32_t *idx, int count,
                                  int inner)
{
    int o, k, i;
    mt_zero(dx, outer * n * inner);
    for (o = 0; o < outer; ++o)
        for (k = 0; k < count; ++k) {
            const float *src = dy + ((size_t)o * count + k) * inner;
            float *dst = dx + ((size_t)o * n + idx[k]) * inner;
            for (i = 0; i < inner; ++i) dst[i] += src[i];
        }
}

/* Slice: the k-th element of the slice is element o_k of the sliced tensor, o_k walked from `off`
 * with element strides sx (negative along a reversed axis) over the slice's `shape` (rank >= 1
 * dims, n elements). scatter = 0: y[k] = x[o_k] (the forward); scatter = 1: y[o_k] = x[k] (the
 * gradient, into a zeroed y). Offsets stay in size_t: the unsigned wrap-around of a negative
 * stride is undone before any element is read. */
static inline void mt_slice(const float *x, float *y, size_t off, int n, int rank, const int32_t *shape,
                            const int32_t *sx, int scatter)
{
    static const int32_t zero[MT_MAX_RANK] = {0};
    int32_t idx[MT_MAX_RANK] = {0};
    size_t o = off, unused = 0;
    int k;
    for (k = 0; k < n; ++k) {
        if (scatter) y[o] = x[k];
        else y[k] = x[o];
        mt_next_index(rank, shape, idx, sx, zero, &o, &unused);
    }
}

/* y (n elements over `shape`, rank dims) = cond ? a : b, each read with its broadcast strides
 * (sc, sa, sb: 0 along broadcast dims); a NULL a or b reads as 0 (Where's gradients). */
static inline void mt_where(const uint8_t *cond, const int32_t *sc, const float *a, const int32_t *sa,
                            const float *b, const int32_t *sb, float *y, int rank, const int32_t *shape, int n)
{
    static const int32_t zero[MT_MAX_RANK] = {0};
    int32_t idx[MT_MAX_RANK] = {0}, idx_b[MT_MAX_RANK] = {0};
    size_t oc = 0, oa = 0, ob = 0, unused = 0;
    int i;
    for (i = 0; i < n; ++i) {
        y[i] = cond[oc] ? (a ? a[oa] : 0.0f) : (b ? b[ob] : 0.0f);
        mt_next_index(rank, shape, idx, sc, sa, &oc, &oa);
        mt_next_index(rank, shape, idx_b, sb, zero, &ob, &unused);
    }
}

#endif
