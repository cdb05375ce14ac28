/* gemm.h for cores without a vector unit: dot products and scaled rows, few registers. */
#ifndef MT_GEMM_ROWS_H
#define MT_GEMM_ROWS_H
#include "../mt_common.h"

/* Dot products per pass of the forward Gemm (transB): 2, or 4 where a target's flags say so
 * (a target TOML's cflags: it pays where four sums and their rows fit the registers). */
#ifndef MT_GEMM_DOTS
#define MT_GEMM_DOTS 2
#endif

/* alpha * s + beta * c[i * csn] (+ 0 without C): one forward Gemm output. */
static inline float mt_gemm_out(float alpha, float s, const float *c, int i, int csn, float beta)
{
    return alpha * s + (c ? beta * c[(size_t)i * csn] : 0.0f);
}

/* y[n] = alpha * (a . b_n) + beta * c_n for 2 rows b_n of B at once: a's loads are shared and
 * both sums stay in registers; each sum still adds its terms in k order. */
static inline void mt_gemm_dot2(int K, float alpha, const float *MT_RESTRICT a, int sak,
                                const float *MT_RESTRICT b, float *y, const float *c, int csn, float beta)
{
    const float *b1 = b + K;
    float s0 = 0.0f, s1 = 0.0f;
    int k;
    for (k = 0; k < K; ++k) {
        const float v = a[(size_t)k * sak];
        s0 += v * b[k];
        s1 += v * b1[k];
    }
    y[0] = mt_gemm_out(alpha, s0, c, 0, csn, beta);
    y[1] = mt_gemm_out(alpha, s1, c, 1, csn, beta);
}

/* The same for 4 rows (MT_GEMM_DOTS 4: cores with the registers for it). */
static inline void mt_gemm_dot4(int K, float alpha, const float *MT_RESTRICT a, int sak,
                                const float *MT_RESTRICT b, float *y, const float *c, int csn, float beta)
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
    y[0] = mt_gemm_out(alpha, s0, c, 0, csn, beta);
    y[1] = mt_gemm_out(alpha, s1, c, 1, csn, beta);
    y[2] = mt_gemm_out(alpha, s2, c, 2, csn, beta);
    y[3] = mt_gemm_out(alpha, s3, c, 3, csn, beta);
}

/* transB: B's rows are contiguous along k, so each output is a dot product, MT_GEMM_DOTS at a
 * time. Out of line (MT_OUTLINE): the forward Gemms of a model share one copy. It takes transA, not
 * A's two strides: a constant argument fewer left for the caller to pass on the stack. */
MT_OUTLINE void mt_gemm_dots(int M, int N, int K, float alpha, const float *MT_RESTRICT A, int transA,
                             const float *MT_RESTRICT B, float beta, const float *C, int csm, int csn, float *Y)
{
    const int sam = transA ? 1 : K, sak = transA ? M : 1;
    const int n4 = MT_GEMM_DOTS == 4 ? N - N % 4 : 0, n2 = N - N % 2;
    int m, n, k;
    for (m = 0; m < M; ++m) {
        float *y = Y + (size_t)m * N;
        const float *a = A + (size_t)m * sam, *c = C ? C + (size_t)m * csm : NULL;
        for (n = 0; n < n4; n += 4)
            mt_gemm_dot4(K, alpha, a, sak, B + (size_t)n * K, y + n, c ? c + (size_t)n * csn : NULL, csn, beta);
        for (; n < n2; n += 2)
            mt_gemm_dot2(K, alpha, a, sak, B + (size_t)n * K, y + n, c ? c + (size_t)n * csn : NULL, csn, beta);
        for (; n < N; ++n) {
            const float *b = B + (size_t)n * K;
            float acc = 0.0f;
            for (k = 0; k < K; ++k) acc += a[(size_t)k * sak] * b[k];
            y[n] = mt_gemm_out(alpha, acc, c, n, csn, beta);
        }
    }
}

/* The scaled rows (axpy) of a Gemm without transB, for r < rows: y += alpha * a[r * sa] * row r of b
 * (b's rows add up in y), or (outer) row r of y += alpha * a[r * sa] * b (an outer product).
 * A zero scale (a gradient that a ReLU, Clip or MaxPool stopped) adds only zeros: skipped (b is
 * finite: the step checks its input and loss). Out of line (MT_OUTLINE): the backward Gemms share
 * one copy (the loop gains nothing from constant sizes). */
MT_OUTLINE void mt_axpy_rows(int rows, int N, float alpha, const float *MT_RESTRICT a, int sa,
                             const float *MT_RESTRICT b, float *y, int outer)
{
    const int sb = outer ? 0 : N, sy = outer ? N : 0;
    int r, n;
    for (r = 0; r < rows; ++r, a += sa, b += sb, y += sy) {
        const float s = alpha * *a;
        if (s == 0.0f) continue;
        for (n = 0; n < N; ++n) y[n] += s * b[n];
    }
}

static inline void mt_gemm(int M, int N, int K, float alpha, const float *MT_RESTRICT A, int transA,
                           const float *MT_RESTRICT B, int transB, float beta, const float *C, int csm,
                           int csn, float *Y)
{
    const int sam = transA ? 1 : K, sak = transA ? M : 1;
    int m, n;
    if (beta == 0.0f) C = NULL; /* C's contents unread */
    if (transB) {
        mt_gemm_dots(M, N, K, alpha, A, transA, B, beta, C, csm, csn, Y);
        return;
    }
    if (K == 1 && C == Y && csm == N && csn == 1 && beta == 1.0f) {
        /* the fused update of an outer product (a batch-1 weight gradient): all rows in one call */
        mt_axpy_rows(M, N, alpha, A, sam, B, Y, 1);
        return;
    }
    for (m = 0; m < M; ++m) {
        /* Y's row starts as beta * C, unless it already is C (the fused update: C == Y, beta = 1) */
        float *y = Y + (size_t)m * N;
        const float *c = C ? C + (size_t)m * csm : NULL;
        if (!c) {
            for (n = 0; n < N; ++n) y[n] = 0.0f;
        } else if (!(c == y && csn == 1 && beta == 1.0f)) {
            for (n = 0; n < N; ++n) y[n] = beta * c[(size_t)n * csn];
        }
        mt_axpy_rows(K, N, alpha, A + (size_t)m * sam, sak, B, y, 0);
    }
}

#endif
