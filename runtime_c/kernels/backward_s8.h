/* The backward pass through int8 layers (frozen weights, float gradients). Gradients are taken
 * with respect to real values, scale * (q - zero point); where they pass is a 1-bit mask (mask.h). */
#ifndef MT_BACKWARD_S8_H
#define MT_BACKWARD_S8_H
#include "../mt_common.h"
#include "pool.h"

/* The int32 bias of a trainable float bias B at scale S (input scale x weight scale, per
 * channel): round half to even, saturated at +-2^30 (codegen/ops/_qlinear.py BIAS_LIMIT: the
 * int8 sums fit beside it; a NaN gives -2^30). */
static inline void mt_quantize_bias(const float *B, const float *S, int32_t *Q, int n)
{
    int i;
    for (i = 0; i < n; ++i) {
        const float v = rintf(B[i] / S[i]);
        Q[i] = v >= 1073741824.0f ? 1073741824 : v >= -1073741824.0f ? (int32_t)v : -1073741824;
    }
}

/* dX (N, C, h, w) = the transposed convolution of dY (N, M, oh, ow) with the real weights
 * SW[m] * (W - ZW[m]) (W: M, C/G, kh, kw), dequantized one weight at a time. */
static inline void mt_conv_grad_x_s8w(const float *MT_RESTRICT dY, const int8_t *MT_RESTRICT W, const int32_t *ZW,
                                      const float *SW, float *MT_RESTRICT dX, int N, int C, int M, int G, mt_window g)
{
    const int cg = C / G, mg = M / G, kk = g.kh * g.kw, oplane = g.oh * g.ow, plane = g.h * g.w;
    int n, c, m, i, j, k;
    for (n = 0; n < N; ++n) {
        for (c = 0; c < C; ++c) {
            const int m0 = (c / cg) * mg;
            const int8_t *wc = W + ((size_t)m0 * cg + c % cg) * kk;
            float *dx = dX + ((size_t)n * C + c) * plane;
            for (k = 0; k < plane; ++k) dx[k] = 0.0f;
            for (m = 0; m < mg; ++m) {
                const float *dm = dY + ((size_t)n * M + m0 + m) * oplane;
                const int8_t *wr = wc + (size_t)m * cg * kk;
                for (i = 0; i < g.kh; ++i)
                    for (j = 0; j < g.kw; ++j)
                        mt_conv_scatter_tap(dm, dx, SW[m0 + m] * (float)(*wr++ - ZW[m0 + m]), i, j, &g);
            }
        }
    }
}

/* dX (N, C, h, w) of a depthwise convolution (M = G = C) whose output planes are as large as its
 * input planes, in place (dX may be dY): each dY plane is copied to the stack (at most
 * MT_PLANE_MAX values, codegen/ops/qlinear_conv.py) before its dX plane is written. The same
 * sums, in the same order, as mt_conv_grad_x_s8w. */
#define MT_PLANE_MAX 512
static inline void mt_depthwise_grad_x_s8w(const float *dY, const int8_t *MT_RESTRICT W, const int32_t *ZW,
                                           const float *SW, float *dX, int N, int C, mt_window g)
{
    float plane[MT_PLANE_MAX];
    const int size = g.h * g.w, kk = g.kh * g.kw;
    int p, k;
    for (p = 0; p < N * C; ++p) {
        for (k = 0; k < size; ++k) plane[k] = dY[(size_t)p * size + k];
        mt_conv_grad_x_s8w(plane, W + (size_t)(p % C) * kk, ZW + p % C, SW + p % C, dX + (size_t)p * size, 1, 1, 1, 1,
                           g);
    }
}

/* Output channels a pointwise dX kernel buffers per pixel (codegen/ops/qlinear_conv.py). */
#define MT_POINTWISE_MAX 256

/* dX (N, C, P) = the pointwise (1x1, stride 1, unpadded, ungrouped) transposed convolution of
 * dY (N, M, P) with the real weights SW[m] * (W - ZW[m]) (W: M, C), M <= MT_POINTWISE_MAX. Each
 * pixel's M gradients are read before its C results are written, so dX may be dY (M == C): the
 * DS-CNN's backward then holds one gradient map, not two. Sums over m in order, as
 * mt_conv_grad_x_s8w. */
static inline void mt_pointwise_grad_x_s8w(const float *dY, const int8_t *MT_RESTRICT W, const int32_t *ZW,
                                           const float *SW, float *dX, int N, int C, int M, int P)
{
    float dy[MT_POINTWISE_MAX];
    int n, p, m, c;
    for (n = 0; n < N; ++n) {
        for (p = 0; p < P; ++p) {
            for (m = 0; m < M; ++m) dy[m] = dY[((size_t)n * M + m) * P + p];
            for (c = 0; c < C; ++c) {
                float acc = 0.0f;
                for (m = 0; m < M; ++m) acc += SW[m] * (float)(W[(size_t)m * C + c] - ZW[m]) * dy[m];
                dX[((size_t)n * C + c) * P + p] = acc;
            }
        }
    }
}

/* dA (R, K) = dY (R, N) times the real weights' transpose: B' (K, N) = B, or B^T when transB
 * (B: N, K), column n at scale SB[n] and zero point ZB[n]. */
static inline void mt_gemm_grad_x_s8w(const float *MT_RESTRICT dY, const int8_t *MT_RESTRICT B, const int32_t *ZB,
                                      const float *SB, float *MT_RESTRICT dA, int R, int K, int N, int transB)
{
    int r, k, n;
    for (r = 0; r < R; ++r) {
        for (k = 0; k < K; ++k) {
            float acc = 0.0f;
            for (n = 0; n < N; ++n) {
                const int8_t b = transB ? B[(size_t)n * K + k] : B[(size_t)k * N + n];
                acc += dY[(size_t)r * N + n] * (SB[n] * (float)(b - ZB[n]));
            }
            dA[(size_t)r * K + k] = acc;
        }
    }
}

#endif
