/* Grouped int8 convolution (1-D: H = 1), the frozen layers' QLinearConv: X (N, C, h, w) with zero
 * point zx, W (M, C/G, kh, kw) with zero point ZW[m] per output channel, B (M) int32 or NULL,
 * Y (N, M, oh, ow) requantized per output channel. Padding taps are skipped: they contribute
 * a real zero, (x - zx) = 0.
 * Portable scalar code: one int32 dot product per output pixel. On cores with the DSP extension
 * (Cortex-M4/M7/M33) conv_s8_dsp.h runs 1x1 and depthwise 3x3 convolutions with dual 16-bit MACs
 * (SMLAD) instead, cores with a vector unit (MT_SIMD) the tiles of dot_s8_vec.h; every output is
 * the same exact int32 sum (check_sums in codegen/ops/_qlinear.py keeps it in range), so the same
 * integers. */
#ifndef MT_CONV_S8_H
#define MT_CONV_S8_H
#include "../mt_common.h"
#include "pool.h"
#include "quant_s8.h"

/* The DSP path reads 4 adjacent int8 values as one little-endian word. */
#ifndef MT_CONV_S8_DSP
#if defined(__ARM_FEATURE_DSP) && !defined(__ARM_BIG_ENDIAN)
#define MT_CONV_S8_DSP 1
#else
#define MT_CONV_S8_DSP 0
#endif
#endif

#if MT_CONV_S8_DSP
#include "conv_s8_dsp.h"
#endif
#if MT_SIMD
#include "dot_s8_vec.h"
#endif

static inline void mt_conv_s8(const int8_t *MT_RESTRICT X, int32_t zx, const int8_t *MT_RESTRICT W,
                              const int32_t *ZW, const int32_t *B, int8_t *MT_RESTRICT Y, int N, int C, int M,
                              int G, mt_window g, mt_requant q)
{
    const int cg = C / G, mg = M / G, plane = g.h * g.w, kk = g.kh * g.kw;
    int n, m, c, i, j, oh, ow;
#if MT_CONV_S8_DSP
    if (mt_conv_s8_dsp(X, zx, W, ZW, B, Y, N, C, M, G, &g, &q)) return;
#endif
#if MT_SIMD
    mt_conv_s8_vec(X, zx, W, ZW, B, Y, N, C, M, G, g, &q);
    return;
#endif
    for (n = 0; n < N; ++n) {
        for (m = 0; m < M; ++m) {
            const int8_t *x = X + ((size_t)n * C + (size_t)(m / mg) * cg) * plane;
            const int8_t *wm = W + (size_t)m * cg * kk;
            int8_t *y = Y + ((size_t)n * M + m) * g.oh * g.ow;
            for (oh = 0; oh < g.oh; ++oh) {
                for (ow = 0; ow < g.ow; ++ow) {
                    const mt_taps t = mt_window_at(&g, oh, ow);
                    int32_t acc = B ? B[m] : 0;
                    for (c = 0; c < cg; ++c) {
                        for (i = t.i0; i < t.i1; ++i) {
                            const int8_t *xr = x + (size_t)c * plane + mt_tap_offset(&g, &t, i);
                            const int8_t *wr = wm + (size_t)c * kk + i * g.kw + t.j0;
                            for (j = 0; j < t.j1 - t.j0; ++j)
                                acc += ((int32_t)xr[j * g.dw] - zx) * ((int32_t)wr[j] - ZW[m]);
                        }
                    }
                    y[oh * g.ow + ow] = mt_requant_s8(acc, &q, m);
                }
            }
        }
    }
}

#endif
