/* mt_conv_s8 on cores with the DSP extension (Cortex-M4/M7/M33), included by conv_s8.h: SMLAD
 * multiplies two int16 pairs and adds both products to an accumulator, two MACs in one
 * instruction. Integer sums, so the same results as the portable code in any order.
 * - 1x1 kernels (pointwise; any stride, padding, groups): the (x - zx) of two output pixels'
 *   channels are packed once into int16 values on the stack, the same layout as the weights
 *   (WP), then each pair of output channels takes them: 2 channels x 2 pixels, 8 SMLAD per four
 *   64-bit loads (LDRD).
 * - depthwise 3x3, stride 1, undilated: each input row is copied once with its padding (pad
 *   bytes zx) into a ring of 3 rows; two adjacent output pixels read 4 input bytes per kernel row,
 *   SXTB16 splits them into the pairs (x0, x2) and (x1, x3) that meet the packed (w0, w2); w1 takes
 *   a single MAC. zx is folded into the bias as zx * sum(w).
 * Other shapes return 0: conv_s8.h's per-pixel code runs them. */
#ifndef MT_CONV_S8_DSP_H
#define MT_CONV_S8_DSP_H
#include <arm_acle.h>

/* The 1x1 path's packed input on the stack, in int64 of 4 channels (1 KiB): two pixels of up to
 * 256 channels, or a tile of more pixel pairs of fewer. */
#define MT_S8_PACK 128

/* The word of int16 values lo, hi (x - zx or w - zw, within [-255, 255]). */
static inline uint32_t mt_s8_pair(int32_t lo, int32_t hi)
{
    return ((uint32_t)lo & 0xffffu) | ((uint32_t)hi << 16);
}

/* The low and high words of a packed int64: two pairs of int16. */
static inline int32_t mt_s8_lo(int64_t v) { return (int32_t)(uint32_t)(uint64_t)v; }
static inline int32_t mt_s8_hi(int64_t v) { return (int32_t)(uint32_t)((uint64_t)v >> 32); }

/* The cg channels of the input pixel at offset o of the plane (o < 0: padding), x - zx packed
 * like a weight row (zero past cg), into every other int64 of out (two pixels interleave). */
static inline void mt_s8_pack(const int8_t *x, int plane, int cg, int o, int32_t zx, int64_t *out)
{
    int c;
    if (o < 0) zx = 0; /* padding: zeros */
    for (c = 0; c + 4 <= cg; c += 4, x += 4 * (size_t)plane) {
        const int32_t x0 = o < 0 ? 0 : x[o], x1 = o < 0 ? 0 : x[o + plane];
        const int32_t x2 = o < 0 ? 0 : x[o + 2 * plane], x3 = o < 0 ? 0 : x[o + 3 * plane];
        out[c / 2] = (int64_t)((uint64_t)mt_s8_pair(x2 - zx, x3 - zx) << 32 | mt_s8_pair(x0 - zx, x1 - zx));
    }
    if (c < cg) { /* the last 1-3 channels */
        int32_t v[4] = {0, 0, 0, 0};
        int i;
        for (i = 0; c + i < cg && o >= 0; ++i) v[i] = x[o + (size_t)i * plane] - zx;
        out[c / 2] = (int64_t)((uint64_t)mt_s8_pair(v[2], v[3]) << 32 | mt_s8_pair(v[0], v[1]));
    }
}

/* Plane offset of the input tap of output pixel p of a 1x1 window, -1 in the padding. */
static inline int mt_s8_1x1_offset(const mt_window *g, int p)
{
    const int ih = p / g->ow * g->sh - g->pt, iw = p % g->ow * g->sw - g->pl;
    return ih >= 0 && ih < g->h && iw >= 0 && iw < g->w ? ih * g->w + iw : -1;
}

/* The two words of *p (*lo: the low 32 bits), then p advances: one LDRD with post-increment
 * (GCC splits a 64-bit C load whose halves are used apart into two LDR and pointer updates). */
#ifndef MT_S8_LDRD /* (a host test defines a portable one) */
#define MT_S8_LDRD(p, lo, hi) __asm__("ldrd %0, %1, [%2], #8" : "=r"(lo), "=r"(hi), "+r"(p) : "m"(*(p)))
#endif

/* acc[2i + j] += pixel j . row i (wa, wb) over n int64 of 4 taps; x interleaves the pixels:
 * x[2k] pixel 0, x[2k + 1] pixel 1. Out of line: inlined into a big caller, GCC spilled the
 * accumulators inside the loop. */
MT_OUTLINE void mt_s8_dot2x2(const int64_t *x, const int64_t *wa, const int64_t *wb, int n, int32_t *acc)
{
    int32_t a0 = acc[0], a1 = acc[1], b0 = acc[2], b1 = acc[3], s0, s1, t0, t1, u0, u1;
    const int64_t *end = wa + n;
#define MT_S8_STEP()                                         \
    do {                                                     \
        MT_S8_LDRD(wa, s0, s1);                              \
        MT_S8_LDRD(wb, t0, t1);                              \
        MT_S8_LDRD(x, u0, u1);                               \
        a0 = __smlad(u1, s1, __smlad(u0, s0, a0));           \
        b0 = __smlad(u1, t1, __smlad(u0, t0, b0));           \
        MT_S8_LDRD(x, u0, u1);                               \
        a1 = __smlad(u1, s1, __smlad(u0, s0, a1));           \
        b1 = __smlad(u1, t1, __smlad(u0, t0, b1));           \
    } while (0)
    while (end - wa >= 4) { /* unrolled: one compare and branch per 64 MACs */
        MT_S8_STEP();
        MT_S8_STEP();
        MT_S8_STEP();
        MT_S8_STEP();
    }
    while (wa < end) MT_S8_STEP();
#undef MT_S8_STEP
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = b0;
    acc[3] = b1;
}

/* mt_round_shift's rule (quant_s8.h), read off its results on -1.75 .. 1.75 in quarters: 1 half
 * up, 2 half to even, 0 another (then mt_s8_rq_apply calls mt_requant_s8). Constants once inlined. */
static inline int mt_s8_rounding(void)
{
#define MT_S8_R(k) mt_round_shift(k, 2) /* k / 4 */
    const int floors = MT_S8_R(-7) == -2 && MT_S8_R(-5) == -1 && MT_S8_R(-3) == -1 && MT_S8_R(-1) == 0 &&
                       MT_S8_R(1) == 0 && MT_S8_R(3) == 1 && MT_S8_R(5) == 1 && MT_S8_R(7) == 2;
    const int up = MT_S8_R(-6) == -1 && MT_S8_R(-2) == 0 && MT_S8_R(2) == 1 && MT_S8_R(6) == 2;
    const int even = MT_S8_R(-6) == -2 && MT_S8_R(-2) == 0 && MT_S8_R(2) == 0 && MT_S8_R(6) == 2;
#undef MT_S8_R
    return !floors ? 0 : up ? 1 : even ? 2 : 0;
}

/* One output channel's requantization, read once: the same bits as mt_requant_s8. With the
 * usual shift n >= 33 the half 2^(n-1) is a multiple of 2^32: of the 64-bit product hi * 2^32 + lo
 * only hi matters, and lo = 0 for a tie: 32-bit arithmetic only. */
typedef struct {
    int32_t mult, shift, zp, lo, hi, c;
} mt_s8_rq;

static inline mt_s8_rq mt_s8_rq_of(const mt_requant *q, int c)
{
    const int k = q->per_channel ? c : 0;
    mt_s8_rq r;
    r.mult = q->mult[k];
    r.shift = q->shift[k] - 32;
    r.zp = q->zp;
    r.lo = q->lo;
    r.hi = q->hi;
    r.c = c;
    return r;
}

static inline int8_t mt_s8_rq_apply(const mt_s8_rq *r, const mt_requant *q, int32_t acc)
{
    const int rule = mt_s8_rounding();
    const int64_t p = (int64_t)acc * r->mult;
    const int32_t hi = (int32_t)(p >> 32); /* |hi| < 2^30 */
    int32_t v;
    if (r->shift < 1 || rule == 0) return mt_requant_s8(acc, q, r->c);
    /* half up: (hi + half) >> s; to even, a tie (lo = 0 and hi's low s bits = half) of an even
     * quotient rounds down: one less added */
    v = hi + ((int32_t)1 << (r->shift - 1));
    if (rule == 2) v -= (uint32_t)(uint64_t)p == 0 && !((hi >> r->shift) & 1);
    v = r->zp + (v >> r->shift);
    return (int8_t)(v < r->lo ? r->lo : v > r->hi ? r->hi : v);
}

/* 1x1 kernels, two output pixels x two output channels at a time; an odd last pixel or channel
 * is paired with itself (computed twice, stored once). The pixels are packed a tile at a time
 * (as many pixel pairs as fill the stack buffer), then every pair of channels runs over the tile:
 * each channel's bias and requantization are read once per tile. */
static inline void mt_conv_s8_1x1(const int8_t *X, int32_t zx, const int64_t *WP, const int32_t *B, int8_t *Y,
                                  int N, int C, int M, int G, const mt_window *g, const mt_requant *q)
{
    const int cg = C / G, mg = M / G, n64 = (cg + 3) / 4, plane = g->h * g->w, out = g->oh * g->ow;
    const int tile = MT_S8_PACK / (2 * n64); /* pixel pairs a tile */
    int64_t xp[MT_S8_PACK];
    int32_t acc[4];
    int n, gi, p, i, j;
    for (n = 0; n < N; ++n) {
        for (gi = 0; gi < G; ++gi) {
            const int8_t *x = X + ((size_t)n * C + (size_t)gi * cg) * plane;
            for (p = 0; p < out; p += 2 * tile) {
                const int pairs = out - p < 2 * tile ? (out - p + 1) / 2 : tile;
                for (i = 0; i < pairs; ++i) {
                    const int pa = p + 2 * i, pb = pa + 1 < out ? pa + 1 : pa;
                    mt_s8_pack(x, plane, cg, mt_s8_1x1_offset(g, pa), zx, xp + 2 * n64 * i);
                    mt_s8_pack(x, plane, cg, mt_s8_1x1_offset(g, pb), zx, xp + 2 * n64 * i + 1);
                }
                for (j = 0; j < mg; j += 2) {
                    const int m0 = gi * mg + j, m1 = j + 1 < mg ? m0 + 1 : m0;
                    const mt_s8_rq r0 = mt_s8_rq_of(q, m0), r1 = mt_s8_rq_of(q, m1);
                    const int32_t b0 = B ? B[m0] : 0, b1 = B ? B[m1] : 0;
                    const int64_t *wa = WP + (size_t)m0 * n64, *wb = WP + (size_t)m1 * n64;
                    int8_t *y0 = Y + ((size_t)n * M + m0) * out + p, *y1 = Y + ((size_t)n * M + m1) * out + p;
                    for (i = 0; i < pairs; ++i) {
                        const int second = p + 2 * i + 1 < out; /* 0: the odd last pixel, alone */
                        acc[0] = acc[1] = b0;
                        acc[2] = acc[3] = b1;
                        mt_s8_dot2x2(xp + 2 * n64 * i, wa, wb, n64, acc);
                        y0[2 * i] = mt_s8_rq_apply(&r0, q, acc[0]);
                        y1[2 * i] = mt_s8_rq_apply(&r1, q, acc[2]);
                        if (second) {
                            y0[2 * i + 1] = mt_s8_rq_apply(&r0, q, acc[1]);
                            y1[2 * i + 1] = mt_s8_rq_apply(&r1, q, acc[3]);
                        }
                    }
                }
            }
        }
    }
}

/* The depthwise path's padded input rows on the stack: 3 rows of up to this many bytes. */
#define MT_S8_DW_ROW 256

/* One kernel row's share of two adjacent depthwise 3x3 outputs: r holds x0..x3, w02 packs taps
 * (0, 2) of the kernel row, w1 is tap 1. */
#define MT_S8_DW_ROW_MAC(r, w02, w1)                                                    \
    do {                                                                                \
        uint32_t u;                                                                     \
        int32_t even, odd;                                                              \
        memcpy(&u, r, sizeof u);         /* x0..x3 (little-endian) */                    \
        even = (int32_t)__sxtb16(u);     /* (x0, x2) */                                  \
        odd = (int32_t)__sxtb16(u >> 8); /* (x1, x3) */                                  \
        a = __smlabb(odd, w1, __smlad(even, w02, a));  /* x0 w0 + x2 w2 + x1 w1 */       \
        c = __smlatb(even, w1, __smlad(odd, w02, c));  /* x1 w0 + x3 w2 + x2 w1 */       \
    } while (0)

/* Input row ih of plane x with the padding around it, every pad byte zx (so x - zx = 0). */
static inline void mt_s8_dw_row(const int8_t *x, int ih, const mt_window *g, int8_t zx, int8_t *row)
{
    const int len = g->pl + g->w + g->pr;
    if (ih < 0 || ih >= g->h) {
        memset(row, zx, (size_t)len);
        return;
    }
    memset(row, zx, (size_t)g->pl);
    memcpy(row + g->pl, x + (size_t)ih * g->w, (size_t)g->w);
    memset(row + g->pl + g->w, zx, (size_t)g->pr);
}

/* One depthwise 3x3 channel m: x, y its planes, wp its packed row, b its bias. Each input row is
 * padded once into a ring of 3 rows; two adjacent outputs at a time (an odd last pair overlaps
 * the one before). The products take x, the bias -zx * sum(w): a pad byte zx adds nothing. */
static inline void mt_conv_s8_dw3x3_plane(const int8_t *x, int32_t zx, const int64_t *wp, int32_t b, int8_t *y,
                                          const mt_window *g, const mt_requant *q, int m)
{
    const mt_s8_rq rq = mt_s8_rq_of(q, m);
    const mt_s8_row row = mt_s8_row_of(0, 0, wp, 0, 9);
    int8_t rows[3][MT_S8_DW_ROW];
    int32_t w02[3], w1[3], inner = b;
    int i, oh, o, built = -g->pt - 1;
    for (i = 0; i < 3; ++i) {
        w02[i] = (int32_t)mt_s8_pair(mt_s8_weight(&row, 3 * i), mt_s8_weight(&row, 3 * i + 2));
        w1[i] = mt_s8_weight(&row, 3 * i + 1);
        inner -= zx * (mt_s8_weight(&row, 3 * i) + w1[i] + mt_s8_weight(&row, 3 * i + 2));
    }
    for (oh = 0; oh < g->oh; ++oh) {
        const int ih = oh - g->pt;
        const int8_t *r0, *r1, *r2;
        int8_t *yr = y + oh * g->ow;
        for (; built < ih + 2; ++built) mt_s8_dw_row(x, built + 1, g, (int8_t)zx, rows[(built + 1 + 3) % 3]);
        r0 = rows[(ih + 3) % 3];
        r1 = rows[(ih + 4) % 3];
        r2 = rows[(ih + 5) % 3];
        for (o = 0; o < g->ow; o += 2) {
            const int at = o + 2 <= g->ow ? o : g->ow - 2;
            int32_t a = inner, c = inner;
            MT_S8_DW_ROW_MAC(r0 + at, w02[0], w1[0]);
            MT_S8_DW_ROW_MAC(r1 + at, w02[1], w1[1]);
            MT_S8_DW_ROW_MAC(r2 + at, w02[2], w1[2]);
            yr[at] = mt_s8_rq_apply(&rq, q, a);
            yr[at + 1] = mt_s8_rq_apply(&rq, q, c);
        }
    }
}
#undef MT_S8_DW_ROW_MAC

/* 1 when the shape has a DSP path (and it ran), 0 for the portable code. */
static inline int mt_conv_s8_dsp(const int8_t *X, int32_t zx, const int64_t *WP, const int32_t *B, int8_t *Y,
                                 int N, int C, int M, int G, const mt_window *g, const mt_requant *q)
{
    const int cg = C / G, plane = g->h * g->w;
    int n, m;
    if (g->kh == 1 && g->kw == 1 && (cg + 3) / 4 * 2 <= MT_S8_PACK) {
        mt_conv_s8_1x1(X, zx, WP, B, Y, N, C, M, G, g, q);
        return 1;
    }
    if (!(g->kh == 3 && g->kw == 3 && g->sh == 1 && g->sw == 1 && g->dh == 1 && g->dw == 1 && cg == 1 && M == G &&
          g->pt < 3 && g->pb < 3 && g->ow >= 2 && g->pl + g->w + g->pr <= MT_S8_DW_ROW))
        return 0;
    for (n = 0; n < N; ++n) {
        for (m = 0; m < M; ++m) {
            mt_conv_s8_dw3x3_plane(X + ((size_t)n * C + m) * plane, zx, WP + (size_t)m * 3, B ? B[m] : 0,
                                   Y + ((size_t)n * M + m) * g->oh * g->ow, g, q, m);
        }
    }
    return 1;
}

#endif
