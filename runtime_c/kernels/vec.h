/* MT_VEC-float vectors for the MT_SIMD kernels (GNU C vector extension: element-wise IEEE
 * arithmetic; the compiler maps it to SSE/AVX/NEON). Vectors move through pointers only (by
 * value they change the ABI between SSE and AVX builds). A tile of MT_TILE_M vectors is one
 * kernel's accumulators; MT_SPECIALIZE (always_inline) keeps it in registers. */
#ifndef MT_VEC_H
#define MT_VEC_H
#include "../mt_common.h"
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#define MT_VEC 8
#define MT_TILE_M 4

/* Tiles are MT_TILE_M, 2 or 1 rows high: the highest that fits the rows left. */
static inline int mt_tile_height(int left)
{
    return left >= MT_TILE_M ? MT_TILE_M : left >= 2 ? 2 : 1;
}

/* f(tm, ...) with the tile height tm as a constant, so each height is compiled on its own. */
#define MT_BY_HEIGHT(tm, f, ...) \
    ((tm) == MT_TILE_M ? f(MT_TILE_M, __VA_ARGS__) : (tm) == 2 ? f(2, __VA_ARGS__) : f(1, __VA_ARGS__))

typedef float mt_vec __attribute__((vector_size(MT_VEC * sizeof(float))));
typedef int32_t mt_veci __attribute__((vector_size(MT_VEC * sizeof(int32_t))));

MT_SPECIALIZE void mt_vset(mt_vec *a, float s)
{
    const mt_vec zero = {0.0f};
    *a = zero + s;
}

MT_SPECIALIZE void mt_vload(mt_vec *v, const float *x)
{
    memcpy(v, x, sizeof *v);
}

/* v[t] = row[c0 + t], 0 where c0 + t lies outside [0, len): the zero-padded read at a border.
 * AVX2 loads the lanes inside under a mask (no copy through memory, which would stall the load). */
MT_SPECIALIZE void mt_vload_part(mt_vec *v, const float *row, int c0, int len)
{
    const mt_veci lane = {0, 1, 2, 3, 4, 5, 6, 7}, at = lane + c0, inside = (at >= 0) & (at < len);
#if defined(__AVX2__)
    /* the address as an integer: the masked-off lanes may lie outside the row's array */
    const float *at0 = (const float *)((uintptr_t)row + (uintptr_t)((intptr_t)c0 * (intptr_t)sizeof(float)));
    const __m256 x = _mm256_maskload_ps(at0, (__m256i)inside);
    memcpy(v, &x, sizeof *v);
#else
    float buf[MT_VEC];
    int t;
    for (t = 0; t < MT_VEC; ++t) buf[t] = inside[t] ? row[c0 + t] : 0.0f;
    mt_vload(v, buf);
#endif
}

/* v[t] = row[at[t]] where inside[t], else 0: AVX2 gathers them in one masked instruction. */
MT_SPECIALIZE void mt_vgather(mt_vec *v, const float *row, const mt_veci *at, const mt_veci *inside)
{
#if defined(__AVX2__)
    const __m256 x = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), row, (__m256i)*at, (__m256)*inside, 4);
    memcpy(v, &x, sizeof *v);
#else
    int t;
    for (t = 0; t < MT_VEC; ++t) (*v)[t] = (*inside)[t] ? row[(*at)[t]] : 0.0f;
#endif
}

/* v = row[c0 .. c0 + MT_VEC), zero-padded outside [0, len) */
MT_SPECIALIZE void mt_vload_row(mt_vec *v, const float *row, int c0, int len)
{
    if (c0 >= 0 && c0 + MT_VEC <= len) mt_vload(v, row + c0);
    else mt_vload_part(v, row, c0, len);
}

/* a += s * v */
MT_SPECIALIZE void mt_vaxpy(mt_vec *a, float s, const mt_vec *v)
{
    *a += s * *v;
}

/* a += x * y, lane by lane */
MT_SPECIALIZE void mt_vmla(mt_vec *a, const mt_vec *x, const mt_vec *y)
{
    *a += *x * *y;
}

/* v's lanes below lo set to +0 */
MT_SPECIALIZE void mt_vmask_below(mt_vec *v, int lo)
{
    const mt_veci lane = {0, 1, 2, 3, 4, 5, 6, 7};
    *v = (mt_vec)((mt_veci)*v & (lane >= lo));
}

/* y[0..n) = a's first n lanes. gcc (12) cannot always bound the tile loops of an inlined call
 * and warns of a full-vector copy past the end of a tensor that no run reaches: silenced here. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
MT_SPECIALIZE void mt_vstore(float *y, const mt_vec *a, int n)
{
    memcpy(y, a, (size_t)n * sizeof(float));
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

/* The lanes added in lane order. */
MT_SPECIALIZE float mt_lanes_sum(const mt_vec *a)
{
    float s = (*a)[0];
    int t;
    for (t = 1; t < MT_VEC; ++t) s += (*a)[t];
    return s;
}

#endif
