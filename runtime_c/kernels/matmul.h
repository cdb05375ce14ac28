/* Batched matrix product Y[b] = alpha * op(A[b]) op(B[b]) + beta * Y[b] for b < batch, via mt_gemm.
 * Batch strides of 0 broadcast an operand; a Y batch stride of 0 sums the products over the batch
 * (the gradient of a broadcast operand). beta = 0 ignores Y's old contents. */
#ifndef MT_MATMUL_H
#define MT_MATMUL_H
#include "gemm.h"

static inline void mt_matmul(int batch, int M, int N, int K, const float *A, int sa, int transA,
                             const float *B, int sb, int transB, float *Y, int sy, float alpha,
                             float beta)
{
    int b;
    for (b = 0; b < batch; ++b) {
        float *y = Y + (size_t)b * sy;
        const float keep = (sy == 0 && b > 0) ? 1.0f : beta;
        mt_gemm(M, N, K, alpha, A + (size_t)b * sa, transA, B + (size_t)b * sb, transB, keep,
                keep != 0.0f ? y : NULL, N, 1, y);
    }
}

/* Batch dims broadcast against each other (numpy rules, e.g. (2, 1) against (3,)): output batch b
 * reads A + ao[b], B + bo[b] and writes Y + yo[b]; first[b] = 0 where an earlier batch wrote the
 * same Y, which then adds to it (the gradient of an operand broadcast over those batches). */
static inline void mt_matmul_indexed(int batch, int M, int N, int K, const float *A, const int32_t *ao,
                                     int transA, const float *B, const int32_t *bo, int transB, float *Y,
                                     const int32_t *yo, const int32_t *first, float alpha, float beta)
{
    int b;
    for (b = 0; b < batch; ++b) {
        float *y = Y + yo[b];
        const float keep = first[b] ? beta : 1.0f;
        mt_gemm(M, N, K, alpha, A + ao[b], transA, B + bo[b], transB, keep, keep != 0.0f ? y : NULL, N, 1, y);
    }
}

#endif
