/* gemm.h for cores without a vector unit: dot products and scaled rows, few registers. */
#ifndef MT_GEMM_ROWS_H
#define MT_GEMM_ROWS_H
#include "../mt_common.h"

/* y[n] = alpha * (a . b_n) + c_n for 4 rows b_n of B at once: a's loads are shared and the four
 * sums stay in registers; each sum still adds its terms in k order. */
static inline void mt_gemm_dot4(int K, float alpha, const float *MT_RESTRICT a, int sak,
                                const float *MT_RESTRICT b, float *y, const float *c)
{
    const float *b1 = b + K, *b2 = b1 + K, *b3 = b2 + K;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    int k;
    for (k = 0; k < K; ++k) {
        const float v = a[(size_t)k * sak];
        s0 += v * b[k];
        s1 += v * b1[k];
        s2 += v * b2[k];
        s3 += v * b3[k];
    }
    y[0] = alpha * s0 + c[0];
    y[1] = alpha * s1 + c[1];
    y[2] = alpha * s2 + c[2];
    y[3] = alpha * s3 + c[3];
}

static inline void mt_gemm(int M, int N, int K, float alpha, const float *MT_RESTRICT A, int transA,
                           const float *MT_RESTRICT B, int transB, float beta, const float *C, int csm,
                           int csn, float *Y)
{
    const int sak = transA ? M : 1;
    int m, n, k;
    for (m = 0; m < M; ++m) {
        float *y = Y + (size_t)m * N;
        const float *a = A + (size_t)m * (transA ? 1 : K);
        const float *c = C && beta != 0.0f ? C + (size_t)m * csm : NULL; /* beta 0: C's contents unread */
        if (transB) {
            /* B rows are contiguous along k: dot products, four outputs at a time. */
            const int n4 = N - N % 4;
            float cn[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            for (n = 0; n < n4; n += 4) {
                if (c) {
                    for (k = 0; k < 4; ++k) cn[k] = beta * c[(size_t)(n + k) * csn];
                }
                mt_gemm_dot4(K, alpha, a, sak, B + (size_t)n * K, y + n, cn);
            }
            for (; n < N; ++n) {
                const float *b = B + (size_t)n * K;
                float acc = 0.0f;
                for (k = 0; k < K; ++k) acc += a[(size_t)k * sak] * b[k];
                y[n] = alpha * acc + (c ? beta * c[(size_t)n * csn] : 0.0f);
            }
        } else {
            /* Rows of B are contiguous along n: accumulate scaled rows (axpy). Y's row starts as
             * beta * C, unless it already is C (the fused update: C == Y, beta = 1). */
            if (!c) {
                for (n = 0; n < N; ++n) y[n] = 0.0f;
            } else if (!(c == y && csn == 1 && beta == 1.0f)) {
                for (n = 0; n < N; ++n) y[n] = beta * c[(size_t)n * csn];
            }
            for (k = 0; k < K; ++k) {
                const float s = alpha * a[(size_t)k * sak];
                const float *MT_RESTRICT b = B + (size_t)k * N;
                for (n = 0; n < N; ++n) y[n] += s * b[n];
            }
        }
    }
}

#endif
