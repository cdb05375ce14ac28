/* int8 matrix products, the frozen layers' QGemm and QLinearMatMul: int32 sums of
 * (a - za)(b - ZB[j]), plus an optional int32 C, requantized per output column j (or per tensor).
 * Cores with a vector unit (MT_SIMD) run the tiles of dot_s8_vec.h (the same exact sums). */
#ifndef MT_GEMM_S8_H
#define MT_GEMM_S8_H
#include "../mt_common.h"
#include "quant_s8.h"
#if MT_SIMD
#include "dot_s8_vec.h"
#endif

/* Y (M, N) from A (M, K) or, transA, (K, M) and B (K, N) or, transB, (N, K). C (broadcast to
 * (M, N)) is read at C[i * csm + j * csn], the strides 0 along broadcast dims; NULL for none. */
static inline void mt_gemm_s8(const int8_t *MT_RESTRICT A, int32_t za, const int8_t *MT_RESTRICT B,
                              const int32_t *ZB, const int32_t *C, int csm, int csn, int8_t *MT_RESTRICT Y,
                              int M, int K, int N, int transA, int transB, mt_requant q)
{
    const int ai = transA ? 1 : K, ak = transA ? M : 1, bj = transB ? K : 1, bk = transB ? 1 : N;
    int i, j, k;
#if MT_SIMD
    if (!transA) {
        mt_gemm_s8_vec(A, za, B, ZB, C, csm, csn, Y, M, K, N, transB, &q);
        return;
    }
#endif
    for (i = 0; i < M; ++i) {
        for (j = 0; j < N; ++j) {
            const int8_t *a = A + (size_t)i * ai, *b = B + (size_t)j * bj;
            int32_t acc = C ? C[(size_t)i * csm + (size_t)j * csn] : 0;
            for (k = 0; k < K; ++k)
                acc += ((int32_t)a[(size_t)k * ak] - za) * ((int32_t)b[(size_t)k * bk] - ZB[j]);
            Y[(size_t)i * N + j] = mt_requant_s8(acc, &q, j);
        }
    }
}

/* `batch` products Y[b] = A[b] B[b]: A (batch, M, K), Y (batch, M, N), B (K, N) at B + b * sb
 * (sb = 0: one B for all). */
static inline void mt_matmul_s8(const int8_t *A, int32_t za, const int8_t *B, const int32_t *ZB, int8_t *Y,
                                int batch, int M, int K, int N, size_t sb, mt_requant q)
{
    int b;
    for (b = 0; b < batch; ++b)
        mt_gemm_s8(A + (size_t)b * M * K, za, B + b * sb, ZB, NULL, 0, 0, Y + (size_t)b * M * N, M, K, N, 0, 0, q);
}

#endif
