/* Grouped int8 convolution (1-D: H = 1), the frozen layers' QLinearConv: X (N, C, h, w) with zero
 * point zx, W (M, C/G, kh, kw) with zero point ZW[m] per output channel, B (M) int32 or NULL,
 * Y (N, M, oh, ow) requantized per output channel. Padding taps are skipped: they contribute
 * a real zero, (x - zx) = 0.
 * Two implementations, the same integers (each output is an exact int32 sum; check_sums in
 * codegen/ops/_qlinear.py keeps it in range):
 * - portable scalar code (M3, RISC-V, hosts): one dot product per output pixel, int8 weights W;
 * - cores with the DSP extension (M4, M7, M33; conv_s8_dsp.h): dual 16-bit MACs (SMLAD) on WP,
 *   the weights minus their zero point packed at compile time as int16 values, taps 4k .. 4k+3 of
 *   a row (C/G * kh * kw taps, zero taps added up to a multiple of 4) from the low bits up in the
 *   int64 WP[k]: a 64-bit load gives two words of two int16 each. The emitter passes W and WP,
 *   each through its macro (MT_S8_W8 / MT_S8_WP), so a build keeps only the array it reads in
 *   flash; computed (non-constant) weights come as W alone (WP = NULL) and take the portable code. */
#ifndef MT_CONV_S8_H
#define MT_CONV_S8_H
#include "../mt_common.h"
#include "pool.h"
#include "quant_s8.h"

/* The DSP path reads 4 adjacent int8 inputs as one little-endian word. */
#ifndef MT_CONV_S8_DSP
#if defined(__ARM_FEATURE_DSP) && !defined(__ARM_BIG_ENDIAN)
#define MT_CONV_S8_DSP 1
#else
#define MT_CONV_S8_DSP 0
#endif
#endif

#define MT_S8_W8(w) (MT_CONV_S8_DSP ? 0 : (w))
#define MT_S8_WP(w) (MT_CONV_S8_DSP ? (w) : 0)

/* One output channel's weights, in whichever form this build reads. */
typedef struct {
    const int8_t *w8; /* int8 row, zero point zw */
    int32_t zw;
    const int64_t *wp; /* packed row of w - zw */
    const int16_t *w16; /* or the row of w - zw unpacked (a DSP kernel's border pixels) */
} mt_s8_row;

/* Weight minus zero point of tap k of the row. */
static inline int32_t mt_s8_weight(const mt_s8_row *r, int k)
{
#if MT_CONV_S8_DSP
    if (r->w16) return r->w16[k];
    if (r->wp) {
        const uint64_t v = (uint64_t)r->wp[k >> 2];
        return (int16_t)(uint16_t)((uint32_t)(k & 2 ? v >> 32 : v) >> 16 * (k & 1));
    }
#endif
    return (int32_t)r->w8[k] - r->zw;
}

/* The int32 sum over the input taps of output pixel (oh, ow) of (x - zx) (w - zw); x: the group's
 * first input plane. */
static inline int32_t mt_conv_s8_pixel(const int8_t *x, int32_t zx, const mt_s8_row *r, int cg, const mt_window *g,
                                       int oh, int ow)
{
    const mt_taps t = mt_window_at(g, oh, ow);
    const int plane = g->h * g->w, kk = g->kh * g->kw;
    int32_t acc = 0;
    int c, i, j;
    for (c = 0; c < cg; ++c) {
        for (i = t.i0; i < t.i1; ++i) {
            const int8_t *xr = x + (size_t)c * plane + mt_tap_offset(g, &t, i);
            const int k = c * kk + i * g->kw + t.j0;
            for (j = 0; j < t.j1 - t.j0; ++j) acc += ((int32_t)xr[j * g->dw] - zx) * mt_s8_weight(r, k + j);
        }
    }
    return acc;
}

/* Output channel m's weights. */
static inline mt_s8_row mt_s8_row_of(const int8_t *W, const int32_t *ZW, const int64_t *WP, int m, int taps)
{
    mt_s8_row r;
    r.w8 = W ? W + (size_t)m * taps : W;
    r.zw = ZW ? ZW[m] : 0;
    r.wp = WP ? WP + (size_t)m * ((taps + 3) / 4) : WP;
    r.w16 = 0;
    return r;
}

/* Every output pixel by mt_conv_s8_pixel: the whole portable kernel, the DSP build's fallback. */
static inline void mt_conv_s8_pixels(const int8_t *X, int32_t zx, const int8_t *W, const int32_t *ZW,
                                     const int64_t *WP, const int32_t *B, int8_t *Y, int N, int C, int M, int G,
                                     const mt_window *g, const mt_requant *q)
{
    const int cg = C / G, mg = M / G, plane = g->h * g->w;
    int n, m, oh, ow;
    for (n = 0; n < N; ++n) {
        for (m = 0; m < M; ++m) {
            const int8_t *x = X + ((size_t)n * C + (size_t)(m / mg) * cg) * plane;
            const mt_s8_row r = mt_s8_row_of(W, ZW, WP, m, cg * g->kh * g->kw);
            int8_t *y = Y + ((size_t)n * M + m) * g->oh * g->ow;
            for (oh = 0; oh < g->oh; ++oh)
                for (ow = 0; ow < g->ow; ++ow)
                    y[oh * g->ow + ow] = mt_requant_s8((B ? B[m] : 0) + mt_conv_s8_pixel(x, zx, &r, cg, g, oh, ow), q, m);
        }
    }
}

#if MT_CONV_S8_DSP
#include "conv_s8_dsp.h"
#endif

static inline void mt_conv_s8(const int8_t *MT_RESTRICT X, int32_t zx, const int8_t *W, const int32_t *ZW,
                              const int64_t *WP, const int32_t *B, int8_t *MT_RESTRICT Y, int N, int C, int M, int G,
                              mt_window g, mt_requant q)
{
#if MT_CONV_S8_DSP
    if (WP && mt_conv_s8_dsp(X, zx, WP, B, Y, N, C, M, G, &g, &q)) return;
#endif
    mt_conv_s8_pixels(X, zx, W, ZW, WP, B, Y, N, C, M, G, &g, &q);
}

#endif
