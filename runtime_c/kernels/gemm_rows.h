/* gemm.h for cores without a vector unit: dot products and scaled rows, few registers. */
#ifndef MT_GEMM_ROWS_H
#define MT_GEMM_ROWS_H
#include "../mt_common.h"

/* y[n] = alpha * (a . b_n) + c_n for 2 rows b_n of B at once: a's loads are shared and both
 * sums stay in registers; each sum still adds its terms in k order. */
static inline void mt_gemm_dot2(int K, float alpha, const float *MT_RESTRICT a, int sak,
                                const float *MT_RESTRICT b, float *y, const float *c)
{
    const float *b1 = b + K;
    float s0 = 0.0f, s1 = 0.0f;
    int k;
    for (k = 0; k < K; ++k) {
        const float v = a[(size_t)k * sak];
        s0 += v * b[k];
        s1 += v * b1[k];
    }
    y[0] = alpha * s0 + c[0];
    y[1] = alpha * s1 + c[1];
}

/* transB: B's rows are contiguous along k, so each output is a dot product, two at a time. Out
 * of line (MT_OUTLINE): the forward Gemms of a model share one copy. */
MT_OUTLINE void mt_gemm_dots(int M, int N, int K, float alpha, const float *MT_RESTRICT A, int sam, int sak,
                             const float *MT_RESTRICT B, float beta, const float *C, int csm, int csn, float *Y)
{
    const int n2 = N - N % 2;
    int m, n, k;
    for (m = 0; m < M; ++m) {
        float *y = Y + (size_t)m * N;
        const float *a = A + (size_t)m * sam, *c = C ? C + (size_t)m * csm : NULL;
        float cn[2] = {0.0f, 0.0f};
        for (n = 0; n < n2; n += 2) {
            if (c) {
                for (k = 0; k < 2; ++k) cn[k] = beta * c[(size_t)(n + k) * csn];
            }
            mt_gemm_dot2(K, alpha, a, sak, B + (size_t)n * K, y + n, cn);
        }
        for (; n < N; ++n) {
            const float *b = B + (size_t)n * K;
            float acc = 0.0f;
            for (k = 0; k < K; ++k) acc += a[(size_t)k * sak] * b[k];
            y[n] = alpha * acc + (c ? beta * c[(size_t)n * csn] : 0.0f);
        }
    }
}

static inline void mt_gemm(int M, int N, int K, float alpha, const float *MT_RESTRICT A, int transA,
                           const float *MT_RESTRICT B, int transB, float beta, const float *C, int csm,
                           int csn, float *Y)
{
    const int sam = transA ? 1 : K, sak = transA ? M : 1;
    int m, n, k;
    if (beta == 0.0f) C = NULL; /* C's contents unread */
    if (transB) {
        mt_gemm_dots(M, N, K, alpha, A, sam, sak, B, beta, C, csm, csn, Y);
        return;
    }
    for (m = 0; m < M; ++m) {
        /* Rows of B are contiguous along n: accumulate scaled rows (axpy). Y's row starts as
         * beta * C, unless it already is C (the fused update: C == Y, beta = 1). */
        float *y = Y + (size_t)m * N;
        const float *a = A + (size_t)m * sam, *c = C ? C + (size_t)m * csm : NULL;
        if (!c) {
            for (n = 0; n < N; ++n) y[n] = 0.0f;
        } else if (!(c == y && csn == 1 && beta == 1.0f)) {
            for (n = 0; n < N; ++n) y[n] = beta * c[(size_t)n * csn];
        }
        for (k = 0; k < K; ++k) {
            /* A zero row of op(A) (a gradient that a ReLU, Clip or MaxPool stopped) adds only
             * zeros: skipped (B is finite: the step checks its input and loss). */
            const float s = alpha * a[(size_t)k * sak];
            const float *MT_RESTRICT b = B + (size_t)k * N;
            if (s == 0.0f) continue;
            for (n = 0; n < N; ++n) y[n] += s * b[n];
        }
    }
}

#endif
