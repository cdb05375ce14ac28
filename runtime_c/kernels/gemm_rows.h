/* gemm.h for cores without a vector unit: dot products and scaled rows, few registers. */
#ifndef MT_GEMM_ROWS_H
#define MT_GEMM_ROWS_H
#include "../mt_common.h"

/* Dot products per pass of the forward Gemm (transB): 2, or 4 where a target's flags say so
 * (a target TOML's cflags: it pays where four sums and their rows fit the registers). */
#ifndef MT_GEMM_DOTS
#define MT_GEMM_DOTS 2
#endif

/* y[i] = alpha * (a . row i of b) + y[i] for the MT_GEMM_DOTS rows of b (K apart) from b on, a
 * contiguous: a's loads are shared and the sums stay in registers; each sum adds its terms in k order.
 * Out of line (MT_OUTLINE): the forward Gemms of a model share one copy, and its arguments fit
 * the argument registers, so a caller passes none on the stack. */
MT_OUTLINE void mt_gemm_dots(int K, float alpha, const float *MT_RESTRICT a, const float *MT_RESTRICT b,
                             float *y)
{
    const float *b1 = b + K;
#if MT_GEMM_DOTS == 4
    const float *b2 = b1 + K, *b3 = b2 + K;
    float s2 = 0.0f, s3 = 0.0f;
#endif
    float s0 = 0.0f, s1 = 0.0f;
    int k;
    for (k = 0; k < K; ++k) {
        const float v = a[k];
        s0 += v * b[k];
        s1 += v * b1[k];
#if MT_GEMM_DOTS == 4
        s2 += v * b2[k];
        s3 += v * b3[k];
#endif
    }
    y[0] = alpha * s0 + y[0];
    y[1] = alpha * s1 + y[1];
#if MT_GEMM_DOTS == 4
    y[2] = alpha * s2 + y[2];
    y[3] = alpha * s3 + y[3];
#endif
}

/* transB: B's rows are contiguous along k, so each output is a dot product, MT_GEMM_DOTS at a time
 * (one at a time for what is left, or when op(A)'s rows are strided), added to Y's row, which
 * first holds beta * C (0 without C; C itself when C is Y with beta 1): alpha * s + beta * c as
 * before, the same roundings. */
static inline void mt_gemm_dot_rows(int M, int N, int K, float alpha, const float *MT_RESTRICT A, int sam,
                                    int sak, const float *MT_RESTRICT B, float beta, const float *C, int csm,
                                    int csn, float *Y)
{
    const int nd = sak == 1 ? N - N % MT_GEMM_DOTS : 0;
    int m, n, k;
    for (m = 0; m < M; ++m) {
        float *y = Y + (size_t)m * N;
        const float *a = A + (size_t)m * sam, *c = C ? C + (size_t)m * csm : NULL;
        if (!(c == y && csn == 1 && beta == 1.0f))
            for (n = 0; n < N; ++n) y[n] = c ? beta * c[(size_t)n * csn] : 0.0f;
        for (n = 0; n < nd; n += MT_GEMM_DOTS) mt_gemm_dots(K, alpha, a, B + (size_t)n * K, y + n);
        for (; n < N; ++n) {
            const float *b = B + (size_t)n * K;
            float acc = 0.0f;
            for (k = 0; k < K; ++k) acc += a[(size_t)k * sak] * b[k];
            y[n] = alpha * acc + y[n];
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
        mt_gemm_dot_rows(M, N, K, alpha, A, sam, sak, B, beta, C, csm, csn, Y);
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
