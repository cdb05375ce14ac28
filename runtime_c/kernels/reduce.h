/* Grouped reductions (ReduceMax, ReduceL2: `kind`) and their gradients. x (rank dims, row-major
 * element strides xs) holds ny groups of `group` elements, one per output y[o] (in y's order):
 * outer is x's shape with the reduced dims set to 1 (walking it gives each group's first
 * element), inner x's shape with the kept dims set to 1 (walking it from there gives the group). */
#ifndef MT_REDUCE_H
#define MT_REDUCE_H
#include "../mt_common.h"

enum { MT_REDUCE_MAX, MT_REDUCE_L2 };

/* Moves *at to the next element of a walk over `shape` (position idx) with strides xs. */
static inline void mt_walk_next(int rank, const int32_t *shape, int32_t *idx, const int32_t *xs, size_t *at)
{
    static const int32_t zero[MT_MAX_RANK] = {0};
    size_t unused = 0;
    mt_next_index(rank, shape, idx, xs, zero, at, &unused);
}

/* y[o] = the group's maximum (NaN propagates, as torch.amax), or sqrt(its sum of squares). */
static inline void mt_reduce(const float *x, float *y, int ny, int kind, int rank, const int32_t *outer,
                             const int32_t *inner, const int32_t *xs, int group)
{
    int32_t io[MT_MAX_RANK] = {0};
    size_t base = 0;
    int o, j;
    for (o = 0; o < ny; ++o) {
        int32_t ii[MT_MAX_RANK] = {0};
        size_t at = base;
        float acc = kind == MT_REDUCE_MAX ? x[at] : 0.0f;
        for (j = 0; j < group; ++j) {
            float v = x[at];
            if (kind != MT_REDUCE_MAX) acc += v * v;
            else if (v > acc || v != v) acc = v;
            mt_walk_next(rank, inner, ii, xs, &at);
        }
        y[o] = kind == MT_REDUCE_MAX ? acc : sqrtf(acc);
        mt_walk_next(rank, outer, io, xs, &base);
    }
}

/* Max: dx = (dy[o] / count) * (x == y[o]), count = the ties in the group: the gradient is split
 * evenly among them, as torch.amax (a NaN maximum, count 0, gives NaN as there).
 * L2: dx = x * (dy[o] / y[o]), 0 where y[o] = 0 (as PyTorch's vector_norm). */
static inline void mt_reduce_grad(const float *dy, const float *x, const float *y, float *dx, int ny, int kind,
                                  int rank, const int32_t *outer, const int32_t *inner, const int32_t *xs,
                                  int group)
{
    int32_t io[MT_MAX_RANK] = {0};
    size_t base = 0;
    int o, j;
    for (o = 0; o < ny; ++o) {
        int32_t ii[MT_MAX_RANK] = {0};
        size_t at = base;
        float scale = y[o] == 0.0f ? 0.0f : dy[o] / y[o];
        if (kind == MT_REDUCE_MAX) {
            int count = 0;
            for (j = 0; j < group; ++j) {
                count += x[at] == y[o];
                mt_walk_next(rank, inner, ii, xs, &at); /* back at base, ii all 0, after the group */
            }
            scale = dy[o] / (float)count;
        }
        for (j = 0; j < group; ++j) {
            dx[at] = kind == MT_REDUCE_MAX ? scale * (float)(x[at] == y[o]) : x[at] * scale;
            mt_walk_next(rank, inner, ii, xs, &at);
        }
        mt_walk_next(rank, outer, io, xs, &base);
    }
}

#endif
