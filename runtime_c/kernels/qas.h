/* Gradients of int8 weights and int32 biases that train on their integer grid (generate --update
 * int8), with quantization-aware scaling (QAS; Lin et al., "On-Device Training Under 256KB Memory",
 * NeurIPS 2022). A weight is W = sW[m] * (Wq - zW[m]) per output channel m, an input x = sx *
 * (xq - zx), a bias b = sx * sW[m] * bq. The gradient of the integers is rescaled by sW^-2
 * (bias: (sW sx)^-2), which makes it the real gradient in units of one integer step:
 *   weight: F[m] * sum dY * (xq - zx), F[m] = sx / sW[m]
 *   bias:   F[m] * sum dY,             F[m] = 1 / (sx * sW[m])
 * so SGD on the integers (sgd.h) moves the real weights as float SGD would. Each sum runs in one
 * float, over the batch, then the output pixels in row-major order (the numpy reference in
 * tests/test_qas.py follows the same order); the results come out in the order of dW's layout. */
#ifndef MT_QAS_H
#define MT_QAS_H
#include "../mt_common.h"
#include "pool.h"
#include "sgd.h"

/* Where a gradient g goes: into a float tensor f (f = keep * f + scale * g: the gradient itself,
 * a momentum buffer or an accumulated sum), or, fused plain SGD, onto the integers themselves
 * (s8: int8 weights, s32: int32 biases saturated at +-limit) as the stochastically rounded step
 * scale * g (+ (keep - 1) * w: weight decay), so no gradient buffer is needed. */
typedef struct {
    float *f;
    int8_t *s8;
    int32_t *s32;
    float scale, keep;
    int32_t limit;
    uint32_t *rng;
} mt_qas_out;

static inline void mt_qas_put(const mt_qas_out *o, size_t i, float g)
{
    if (o->f) {
        o->f[i] = mt_update(o->f[i], g, o->scale, o->keep);
    } else if (o->s8) {
        const float decay = o->keep == 1.0f ? 0.0f : (o->keep - 1.0f) * (float)o->s8[i];
        o->s8[i] = (int8_t)mt_int_step(o->s8[i], o->scale * g + decay, -128, 127, o->rng);
    } else {
        const float decay = o->keep == 1.0f ? 0.0f : (o->keep - 1.0f) * (float)o->s32[i];
        o->s32[i] = mt_int_step(o->s32[i], o->scale * g + decay, -o->limit, o->limit, o->rng);
    }
}

/* dW (M, C/G, kh, kw) of an int8 convolution: X (N, C, h, w) int8 at zero point zx, dY (N, M, oh, ow). */
static inline void mt_qas_conv_grad_w(const float *MT_RESTRICT dY, const int8_t *MT_RESTRICT X, int32_t zx,
                                      const float *F, mt_qas_out dW, int N, int C, int M, int G, mt_window g)
{
    const int cg = C / G, mg = M / G, plane = g.h * g.w, oplane = g.oh * g.ow;
    int m, c, i, j, n, o, q, o0, o1, q0, q1;
    for (m = 0; m < M; ++m) {
        for (c = 0; c < cg; ++c) {
            const size_t xc = (size_t)(m / mg) * cg + c;
            for (i = 0; i < g.kh; ++i) {
                mt_span(i * g.dh - g.pt, g.sh, g.oh, g.h, &o0, &o1); /* output rows whose tap i is inside */
                for (j = 0; j < g.kw; ++j) {
                    float acc = 0.0f;
                    mt_span(j * g.dw - g.pl, g.sw, g.ow, g.w, &q0, &q1);
                    for (n = 0; n < N; ++n) {
                        const float *dy = dY + ((size_t)n * M + m) * oplane;
                        const int8_t *x = X + ((size_t)n * C + xc) * plane;
                        for (o = o0; o < o1; ++o) {
                            const float *dr = dy + o * g.ow + q0;
                            const int8_t *xr = x + (o * g.sh + i * g.dh - g.pt) * g.w + q0 * g.sw + j * g.dw - g.pl;
                            for (q = 0; q < q1 - q0; ++q) acc += dr[q] * (float)((int32_t)xr[q * g.sw] - zx);
                        }
                    }
                    mt_qas_put(&dW, (((size_t)m * cg + c) * g.kh + i) * g.kw + j, F[m] * acc);
                }
            }
        }
    }
}

/* dB' of an int8 matrix product Y (R, N) = A (R, K) B' (K, N), A int8 at zero point za; B' = B, or
 * B^T when transB (dW is then laid out as B: N, K). Column n's sum runs over the rows r. */
static inline void mt_qas_gemm_grad_w(const float *MT_RESTRICT dY, const int8_t *MT_RESTRICT A, int32_t za,
                                      const float *F, mt_qas_out dW, int R, int K, int N, int transB)
{
    const int outer = transB ? N : K, inner = transB ? K : N;
    int r, a, b;
    for (a = 0; a < outer; ++a) {
        for (b = 0; b < inner; ++b) {
            const int k = transB ? b : a, n = transB ? a : b;
            float acc = 0.0f;
            for (r = 0; r < R; ++r) acc += dY[(size_t)r * N + n] * (float)((int32_t)A[(size_t)r * K + k] - za);
            mt_qas_put(&dW, (size_t)a * inner + b, F[n] * acc);
        }
    }
}

/* dB (M) = F[m] * the sum of dY (N, M, P) over n, then p. */
static inline void mt_qas_grad_b(const float *MT_RESTRICT dY, const float *F, mt_qas_out dB, int N, int M, int P)
{
    int n, m, p;
    for (m = 0; m < M; ++m) {
        float acc = 0.0f;
        for (n = 0; n < N; ++n)
            for (p = 0; p < P; ++p) acc += dY[((size_t)n * M + m) * P + p];
        mt_qas_put(&dB, (size_t)m, F[m] * acc);
    }
}

#endif
