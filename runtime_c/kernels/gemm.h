/* Y(M,N) = alpha * op(A) op(B) + beta * C, op(A) is (M,K), op(B) is (K,N).
 * A is (M,K), or (K,M) when transA; B is (K,N), or (N,K) when transB.
 * C (optional, NULL for none) is read at C[m*csm + n*csn]: strides of 0 broadcast a bias.
 * C may alias Y (accumulate into Y with beta = 1). */
#ifndef MT_GEMM_H
#define MT_GEMM_H
#include "../mt_common.h"

static inline void mt_gemm(int M, int N, int K, float alpha, const float *A, int transA,
                           const float *B, int transB, float beta, const float *C, int csm,
                           int csn, float *Y)
{
    const int sam = transA ? 1 : K, sak = transA ? M : 1;
    int m, n, k;
    for (m = 0; m < M; ++m) {
        float *y = Y + (size_t)m * N;
        const float *a = A + (size_t)m * sam;
        if (transB) {
            /* B rows are contiguous along k: one dot product per output. */
            for (n = 0; n < N; ++n) {
                const float *b = B + (size_t)n * K;
                float acc = 0.0f;
                for (k = 0; k < K; ++k) acc += a[(size_t)k * sak] * b[k];
                y[n] = alpha * acc + (C ? beta * C[(size_t)m * csm + (size_t)n * csn] : 0.0f);
            }
        } else {
            /* Rows of B are contiguous along n: accumulate scaled rows (axpy). */
            if (C) {
                for (n = 0; n < N; ++n) y[n] = beta * C[(size_t)m * csm + (size_t)n * csn];
            } else {
                for (n = 0; n < N; ++n) y[n] = 0.0f;
            }
            for (k = 0; k < K; ++k) {
                const float s = alpha * a[(size_t)k * sak];
                const float *b = B + (size_t)k * N;
                for (n = 0; n < N; ++n) y[n] += s * b[n];
            }
        }
    }
}

#endif
