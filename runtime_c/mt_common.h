/* mcutrain runtime: shared definitions for the header-only C99 kernels.
 * Every kernel is `static inline`, takes its sizes as arguments (compile-time constants at the call
 * site, so the compiler can specialise) and never allocates. Layouts are row-major. */
#ifndef MT_COMMON_H
#define MT_COMMON_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define MT_RESTRICT __restrict__
/* A kernel shared by many call sites, kept out of line: one copy in flash. */
#define MT_OUTLINE static __attribute__((noinline, unused))
/* A kernel whose loops unroll by its call site's constant sizes (a window's taps): always inlined. */
#define MT_INLINE static inline __attribute__((always_inline))
#else
#define MT_RESTRICT
#define MT_OUTLINE static
#define MT_INLINE static inline
#endif

/* MT_SIMD: kernels for cores with a vector unit (hosts, Cortex-A): register tiles of GNU C
 * vectors (kernels/vec.h). Otherwise (microcontrollers) plain scalar loops, which need fewer
 * registers and less code. Both sum every output in the order fixed by their code; the
 * reductions of weight gradients differ between the two (lanes vs one running sum), so a host
 * and a board agree to float32 rounding. Define MT_SIMD as 0 or 1 to choose. */
#ifndef MT_SIMD
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__SSE2__) || defined(__ARM_NEON))
#define MT_SIMD 1
#else
#define MT_SIMD 0
#endif
#endif

/* Kernels that pay for being compiled for their call site's constant sizes (the vector tiles,
 * the pooling windows): forced inline on cores with a vector unit, where code size is cheap;
 * left to the compiler on microcontrollers. */
#if MT_SIMD
#define MT_SPECIALIZE static inline __attribute__((always_inline))
#else
#define MT_SPECIALIZE static inline
#endif

/* Broadcasting kernels walk at most this many dimensions (the emitter refuses more). */
#define MT_MAX_RANK 6

/* Advance a row-major multi-index `idx` over `shape`; add each dimension's stride to the offsets. */
static inline void mt_next_index(int rank, const int32_t *shape, int32_t *idx, const int32_t *sa,
                                 const int32_t *sb, size_t *oa, size_t *ob)
{
    int d;
    for (d = rank - 1; d >= 0; --d) {
        idx[d]++;
        *oa += (size_t)sa[d];
        *ob += (size_t)sb[d];
        if (idx[d] < shape[d]) return;
        *oa -= (size_t)sa[d] * (size_t)shape[d];
        *ob -= (size_t)sb[d] * (size_t)shape[d];
        idx[d] = 0;
    }
}

/* out = keep * out + scale * v: a gradient kernel's store. keep = 0 writes scale * v (the old
 * contents are ignored); with scale = -lr, keep = 1 - lr * weight_decay it applies plain SGD to the
 * parameter the gradient belongs to, so the gradient needs no buffer (fused updates). */
static inline float mt_update(float out, float v, float scale, float keep)
{
    return keep == 0.0f ? scale * v : keep * out + scale * v;
}

/* 1 if all n values are finite: a training step refuses a NaN/Inf input before anything runs. */
static inline int mt_all_finite(const float *x, size_t n)
{
    size_t i;
    for (i = 0; i < n; ++i)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* 1 if all n class indices lie in [0, classes). */
static inline int mt_all_below(const int32_t *y, size_t n, int32_t classes)
{
    size_t i;
    for (i = 0; i < n; ++i)
        if (y[i] < 0 || y[i] >= classes) return 0;
    return 1;
}

#endif
