/* Sum/Mean/Max/Min over k inputs (1 <= k <= MT_VARIADIC_MAX) with numpy broadcasting. The output
 * y has `shape` (rank dims); `strides` holds k rows of rank element strides, row j being input j's
 * strides over that shape (0 along broadcast dimensions). rank == 0 means every input has y's
 * shape: plain loops over n elements, strides unused (NULL). */
#ifndef MT_VARIADIC_H
#define MT_VARIADIC_H
#include "../mt_common.h"

#define MT_VARIADIC_MAX 16 /* MAX_INPUTS in codegen/ops/_variadic.py */

/* Advances the k input offsets to the next output element. */
static inline void mt_vnext(int k, int rank, const int32_t *shape, const int32_t *strides, int32_t *idx,
                            size_t *off)
{
    int d, j;
    if (rank == 0) {
        for (j = 0; j < k; ++j) off[j]++;
        return;
    }
    for (d = rank - 1; d >= 0; --d) {
        idx[d]++;
        for (j = 0; j < k; ++j) off[j] += (size_t)strides[j * rank + d];
        if (idx[d] < shape[d]) return;
        for (j = 0; j < k; ++j) off[j] -= (size_t)strides[j * rank + d] * (size_t)shape[d];
        idx[d] = 0;
    }
}

/* y = scale * (x0 + x1 + ... + x{k-1}), summed left to right: Sum (scale 1), Mean (scale 1/k). */
static inline void mt_vsum(int k, const float *const *xs, float *y, int rank, const int32_t *shape,
                           const int32_t *strides, int n, float scale)
{
    int32_t idx[MT_MAX_RANK] = {0};
    size_t off[MT_VARIADIC_MAX] = {0};
    int i, j;
    for (i = 0; i < n; ++i) {
        float acc = xs[0][off[0]];
        for (j = 1; j < k; ++j) acc += xs[j][off[j]];
        y[i] = scale * acc;
        mt_vnext(k, rank, shape, strides, idx, off);
    }
}

/* Elementwise max (OP >) / min (OP <); a NaN input makes the output NaN (as torch.maximum). */
#define MT_VEXTREME(NAME, OP)                                                                     \
    static inline void NAME(int k, const float *const *xs, float *y, int rank, const int32_t *shape, \
                            const int32_t *strides, int n)                                        \
    {                                                                                             \
        int32_t idx[MT_MAX_RANK] = {0};                                                           \
        size_t off[MT_VARIADIC_MAX] = {0};                                                        \
        int i, j;                                                                                 \
        for (i = 0; i < n; ++i) {                                                                 \
            float acc = xs[0][off[0]];                                                            \
            for (j = 1; j < k; ++j) {                                                             \
                float v = xs[j][off[j]];                                                          \
                if (v OP acc || v != v) acc = v;                                                  \
            }                                                                                     \
            y[i] = acc;                                                                           \
            mt_vnext(k, rank, shape, strides, idx, off);                                          \
        }                                                                                         \
    }

MT_VEXTREME(mt_vmax, >)
MT_VEXTREME(mt_vmin, <)

/* Max/Min gradient, input `which`'s share of dy, over y's shape (the caller sums it to the input's
 * shape): dy / m where input `which` is one of the m inputs equal to y there (NaN counts as
 * equal to a NaN y), else 0. */
static inline void mt_vextreme_grad(int k, const float *const *xs, const float *y, const float *dy, float *dx,
                                    int which, int rank, const int32_t *shape, const int32_t *strides, int n)
{
    int32_t idx[MT_MAX_RANK] = {0};
    size_t off[MT_VARIADIC_MAX] = {0};
    int i, j;
    for (i = 0; i < n; ++i) {
        float m = y[i];
        int count = 0, mine = 0;
        for (j = 0; j < k; ++j) {
            float v = xs[j][off[j]];
            if (v == m || (v != v && m != m)) {
                ++count;
                if (j == which) mine = 1;
            }
        }
        dx[i] = mine ? dy[i] / (float)count : 0.0f;
        mt_vnext(k, rank, shape, strides, idx, off);
    }
}

#endif
