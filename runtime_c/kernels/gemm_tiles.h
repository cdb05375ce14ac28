/* gemm.h for cores with a vector unit, on register tiles of MT_TILE_M rows times MT_VEC lanes.
 * Without transB, each output sums beta * C, then alpha * A times B in k order, as gemm_rows.h;
 * with transB (the rows of B are contiguous along k) the dot products keep MT_VEC lanes. */
#ifndef MT_GEMM_TILES_H
#define MT_GEMM_TILES_H
#include "../mt_common.h"
#include "vec.h"

/* v = the MT_VEC values p[(k + t) * s] with k + t < n, 0 beyond: a stretch of a row (s = 1), of a
 * column (s = the row length) or one value repeated (s = 0, a broadcast bias). */
MT_SPECIALIZE void mt_vload_spaced(mt_vec *v, const float *p, int k, int s, int n)
{
    const mt_veci lane = {0, 1, 2, 3, 4, 5, 6, 7}, at = (k + lane) * s, inside = k + lane < n;
    if (s == 1) mt_vload_row(v, p, k, n);
    else mt_vgather(v, p, &at, &inside);
}

/* Rows m..m+tm of Y, columns from n. */
MT_SPECIALIZE void mt_gemm_tile(int tm, int m, int n, int N, int K, float alpha, const float *A, int sam, int sak,
                                const float *B, float beta, const float *C, int csm, int csn, float *Y)
{
    mt_vec acc[MT_TILE_M], v;
    int r, k;
    for (r = 0; r < tm; ++r) {
        mt_vset(&acc[r], 0.0f);
        if (C) {
            mt_vload_spaced(&v, C + (size_t)(m + r) * csm, n, csn, N);
            acc[r] = beta * v;
        }
    }
    for (k = 0; k < K; ++k) {
        mt_vload_row(&v, B + (size_t)k * N, n, N);
        for (r = 0; r < tm; ++r) mt_vaxpy(&acc[r], alpha * A[(size_t)(m + r) * sam + (size_t)k * sak], &v);
    }
    for (r = 0; r < tm; ++r) mt_vstore(Y + (size_t)(m + r) * N + n, &acc[r], N - n < MT_VEC ? N - n : MT_VEC);
}

/* Y[m][n..n+tm] for transB: dot products of A's row m and tm rows of B. */
MT_SPECIALIZE void mt_gemm_dot_tile(int tm, int m, int n, int K, float alpha, const float *A, int sam, int sak,
                                    const float *B, float beta, const float *C, int csm, int csn, float *Y, int N)
{
    mt_vec acc[MT_TILE_M], a, b;
    int r, k;
    for (r = 0; r < tm; ++r) mt_vset(&acc[r], 0.0f);
    for (k = 0; k < K; k += MT_VEC) {
        mt_vload_spaced(&a, A + (size_t)m * sam, k, sak, K);
        for (r = 0; r < tm; ++r) {
            mt_vload_row(&b, B + (size_t)(n + r) * K, k, K);
            mt_vmla(&acc[r], &a, &b);
        }
    }
    for (r = 0; r < tm; ++r)
        Y[(size_t)m * N + n + r] = alpha * mt_lanes_sum(&acc[r]) +
                                   (C ? beta * C[(size_t)m * csm + (size_t)(n + r) * csn] : 0.0f);
}

MT_SPECIALIZE void mt_gemm(int M, int N, int K, float alpha, const float *MT_RESTRICT A, int transA,
                           const float *MT_RESTRICT B, int transB, float beta, const float *C, int csm, int csn,
                           float *Y)
{
    const int sam = transA ? 1 : K, sak = transA ? M : 1;
    int m, n, tm;
    if (beta == 0.0f) C = NULL; /* C's contents unread */
    if (transB) {
        for (m = 0; m < M; ++m) {
            for (n = 0; n < N; n += tm) {
                tm = mt_tile_height(N - n);
                MT_BY_HEIGHT(tm, mt_gemm_dot_tile, m, n, K, alpha, A, sam, sak, B, beta, C, csm, csn, Y, N);
            }
        }
        return;
    }
    for (m = 0; m < M; m += tm) {
        tm = mt_tile_height(M - m);
        for (n = 0; n < N; n += MT_VEC)
            MT_BY_HEIGHT(tm, mt_gemm_tile, m, n, N, K, alpha, A, sam, sak, B, beta, C, csm, csn, Y);
    }
}

#endif
