/* mt_conv_s8 on cores with the DSP extension (Cortex-M4/M7/M33), included by conv_s8.h: SMLAD
 * multiplies two int16 pairs and adds both products to an accumulator, two MACs in one
 * instruction; SXTB16 turns the int8 bytes 0, 2 (or 1, 3) of a word into such a pair. Integer
 * sums, so the same results as the portable code in any order. The weights stay the model's
 * int8 array.
 * - 1x1 kernels (pointwise; any stride, padding, groups): the x - zx of a tile of output pixels
 *   are packed once on the stack as int16, channels (4k, 4k+2) and (4k+1, 4k+3) in the two words
 *   of an int64, the pairs SXTB16 makes of a weight word; then each pair of output channels runs
 *   over the tile, 2 channels x 2 pixels at a time: 8 SMLAD per 2 weight words (LDR + 2 SXTB16
 *   each) and 2 pixel int64 (LDRD). The weight zero point is folded into the bias:
 *   sum (x - zx)(w - zw) = sum (x - zx) w - zw sum (x - zx), the last sum packed with the pixel.
 * - depthwise 3x3, stride 1, undilated: each input row is copied once with its padding (pad
 *   bytes zx) into a ring of 3 rows; two adjacent output pixels read 4 input bytes per kernel row,
 *   SXTB16 splits them into the pairs (x0, x2) and (x1, x3) that meet the packed (w0, w2); w1 takes
 *   a single MAC. zx is folded into the bias as zx * sum(w).
 * Other shapes return 0: conv_s8.h's portable code runs them. */
#ifndef MT_CONV_S8_DSP_H
#define MT_CONV_S8_DSP_H
#include <arm_acle.h>

/* The 1x1 path's packed input on the stack, in int64 of 4 channels (1 KiB, and 512 B of pixel
 * sums): a tile of pixels, 2 of up to 256 channels or more of fewer. */
#define MT_S8_PACK 128

/* The word of int16 values lo, hi (x - zx or w - zw, within [-255, 255]). */
static inline uint32_t mt_s8_pair(int32_t lo, int32_t hi)
{
    return ((uint32_t)lo & 0xffffu) | ((uint32_t)hi << 16);
}

/* 4 int8 from p (any alignment: LDR) as a word, byte 0 lowest. */
static inline uint32_t mt_s8_word(const int8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v); /* little-endian */
    return v;
}

/* The x - zx of the cg channels of the input pixel at offset o of the plane (o < 0: padding,
 * all 0) in int64 of 4 channels, (c0, c2) low and (c1, c3) high, zero past cg, into every other
 * int64 of out (two pixels interleave); returns their sum. */
static inline int32_t mt_s8_pack(const int8_t *x, int plane, int cg, int o, int32_t zx, int64_t *out)
{
    int32_t v[4], sum = 0;
    int c = 0, i;
    if (o >= 0) {
        for (x += o; c + 4 <= cg; c += 4, x += 4 * (size_t)plane) { /* whole groups of 4 channels */
            const int32_t v0 = x[0] - zx, v1 = x[plane] - zx, v2 = x[2 * plane] - zx, v3 = x[3 * plane] - zx;
            sum += v0 + v1 + v2 + v3;
            out[c / 2] = (int64_t)((uint64_t)mt_s8_pair(v1, v3) << 32 | mt_s8_pair(v0, v2));
        }
    }
    for (; c < cg; c += 4) { /* padding, or the last 1-3 channels */
        for (i = 0; i < 4; ++i) {
            v[i] = o >= 0 && c + i < cg ? x[(size_t)i * plane] - zx : 0;
            sum += v[i];
        }
        out[c / 2] = (int64_t)((uint64_t)mt_s8_pair(v[1], v[3]) << 32 | mt_s8_pair(v[0], v[2]));
    }
    return sum;
}

/* Plane offset of the input tap of output pixel p of a 1x1 window, -1 in the padding. */
static inline int mt_s8_1x1_offset(const mt_window *g, int p)
{
    const int ih = p / g->ow * g->sh - g->pt, iw = p % g->ow * g->sw - g->pl;
    return ih >= 0 && ih < g->h && iw >= 0 && iw < g->w ? ih * g->w + iw : -1;
}

/* The two words of *p (lo: the low 32 bits), then p advances: one LDRD with post-increment
 * (GCC splits a 64-bit C load whose halves are used apart into two LDR and pointer updates). */
#ifndef MT_S8_LDRD /* (a host test defines a portable one) */
#define MT_S8_LDRD(p, lo, hi) __asm__("ldrd %0, %1, [%2], #8" : "=r"(lo), "=r"(hi), "+r"(p) : "m"(*(p)))
#endif

/* acc[2i + j] += pixel j . int8 row i (wa, wb) over cg channels; x interleaves the two pixels'
 * packed int64 (x[2k] pixel 0, x[2k + 1] pixel 1). Out of line: inlined into its big caller,
 * GCC spilled the accumulators in the loop. */
MT_OUTLINE void mt_s8_dot2x2(const int64_t *x, const int8_t *wa, const int8_t *wb, int cg, int32_t *acc)
{
    int32_t a0 = acc[0], a1 = acc[1], b0 = acc[2], b1 = acc[3], u0, u1;
    const int8_t *end = wa + cg / 4 * 4;
    uint32_t s, t;
#define MT_S8_STEP()                                                                      \
    do {                                                                                  \
        const int32_t s02 = (int32_t)__sxtb16(s), s13 = (int32_t)__sxtb16(s >> 8);          \
        const int32_t t02 = (int32_t)__sxtb16(t), t13 = (int32_t)__sxtb16(t >> 8);          \
        MT_S8_LDRD(x, u0, u1);                                                            \
        a0 = __smlad(u1, s13, __smlad(u0, s02, a0));                                      \
        b0 = __smlad(u1, t13, __smlad(u0, t02, b0));                                      \
        MT_S8_LDRD(x, u0, u1);                                                            \
        a1 = __smlad(u1, s13, __smlad(u0, s02, a1));                                      \
        b1 = __smlad(u1, t13, __smlad(u0, t02, b1));                                      \
    } while (0)
    for (; wa < end; wa += 4, wb += 4) {
        s = mt_s8_word(wa);
        t = mt_s8_word(wb);
        MT_S8_STEP();
    }
    if (cg % 4) { /* the last 1-3 channels, read byte by byte (the row may end the array) */
        int i;
        s = t = 0;
        for (i = 0; i < cg % 4; ++i) {
            s |= (uint32_t)(uint8_t)wa[i] << 8 * i;
            t |= (uint32_t)(uint8_t)wb[i] << 8 * i;
        }
        MT_S8_STEP();
    }
#undef MT_S8_STEP
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = b0;
    acc[3] = b1;
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
    const int64_t p = (int64_t)acc * r->mult;
    const int32_t hi = (int32_t)(p >> 32); /* |hi| < 2^30 */
    int32_t v;
    if (r->shift < 1) return mt_requant_s8(acc, q, r->c);
    /* (hi + half) >> s rounds half up; half to even (quant_s8.h): a tie (lo = 0, hi's low s bits
     * = half) of an even quotient rounds down, one less added (elsewhere one less changes nothing) */
    v = hi + ((int32_t)1 << (r->shift - 1));
    v -= (uint32_t)(uint64_t)p == 0 && !((hi >> r->shift) & 1);
    v = r->zp + (v >> r->shift);
    return (int8_t)(v < r->lo ? r->lo : v > r->hi ? r->hi : v);
}

/* 1x1 kernels, two output pixels x two output channels at a time; an odd last pixel or channel
 * is paired with itself (computed twice, stored once). The pixels are packed a tile at a time
 * (as many pixel pairs as fill the stack buffer), then every pair of channels runs over the tile:
 * each channel's bias and requantization are read once per tile. */
static inline void mt_conv_s8_1x1(const int8_t *X, int32_t zx, const int8_t *W, const int32_t *ZW, const int32_t *B,
                                  int8_t *Y, int N, int C, int M, int G, const mt_window *g, const mt_requant *q)
{
    const int cg = C / G, mg = M / G, n64 = (cg + 3) / 4, plane = g->h * g->w, out = g->oh * g->ow;
    const int tile = MT_S8_PACK / (2 * n64); /* pixel pairs a tile */
    int64_t xp[MT_S8_PACK];
    int32_t sums[MT_S8_PACK], acc[4]; /* each packed pixel's sum of x - zx */
    int n, gi, p, i, j;
    for (n = 0; n < N; ++n) {
        for (gi = 0; gi < G; ++gi) {
            const int8_t *x = X + ((size_t)n * C + (size_t)gi * cg) * plane;
            for (p = 0; p < out; p += 2 * tile) {
                const int pairs = out - p < 2 * tile ? (out - p + 1) / 2 : tile;
                for (i = 0; i < pairs; ++i) {
                    const int pa = p + 2 * i, pb = pa + 1 < out ? pa + 1 : pa;
                    sums[2 * i] = mt_s8_pack(x, plane, cg, mt_s8_1x1_offset(g, pa), zx, xp + 2 * n64 * i);
                    sums[2 * i + 1] = mt_s8_pack(x, plane, cg, mt_s8_1x1_offset(g, pb), zx, xp + 2 * n64 * i + 1);
                }
                for (j = 0; j < mg; j += 2) {
                    const int m0 = gi * mg + j, m1 = j + 1 < mg ? m0 + 1 : m0;
                    const mt_s8_rq r0 = mt_s8_rq_of(q, m0), r1 = mt_s8_rq_of(q, m1);
                    const int32_t b0 = B ? B[m0] : 0, b1 = B ? B[m1] : 0;
                    int8_t *y0 = Y + ((size_t)n * M + m0) * out + p, *y1 = Y + ((size_t)n * M + m1) * out + p;
                    for (i = 0; i < pairs; ++i) {
                        acc[0] = b0 - ZW[m0] * sums[2 * i];
                        acc[1] = b0 - ZW[m0] * sums[2 * i + 1];
                        acc[2] = b1 - ZW[m1] * sums[2 * i];
                        acc[3] = b1 - ZW[m1] * sums[2 * i + 1];
                        mt_s8_dot2x2(xp + 2 * n64 * i, W + (size_t)m0 * cg, W + (size_t)m1 * cg, cg, acc);
                        y0[2 * i] = mt_s8_rq_apply(&r0, q, acc[0]);
                        y1[2 * i] = mt_s8_rq_apply(&r1, q, acc[2]);
                        if (p + 2 * i + 1 < out) {
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

/* One depthwise 3x3 channel m: x, y its planes, w its int8 taps (zero point zw), b its bias. Each input row is
 * padded once into a ring of 3 rows; two adjacent outputs at a time (an odd last pair overlaps
 * the one before). The products take x, the bias -zx * sum(w): a pad byte zx adds nothing. */
static inline void mt_conv_s8_dw3x3_plane(const int8_t *x, int32_t zx, const int8_t *w, int32_t zw, int32_t b,
                                          int8_t *y, const mt_window *g, const mt_requant *q, int m)
{
    const mt_s8_rq rq = mt_s8_rq_of(q, m);
    int8_t rows[3][MT_S8_DW_ROW];
    int32_t w02[3], w1[3], inner = b;
    int i, oh, o, built = -g->pt - 1;
    for (i = 0; i < 3; ++i) {
        w02[i] = (int32_t)mt_s8_pair(w[3 * i] - zw, w[3 * i + 2] - zw);
        w1[i] = w[3 * i + 1] - zw;
        inner -= zx * (w[3 * i] + w[3 * i + 1] + w[3 * i + 2] - 3 * zw);
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
static inline int mt_conv_s8_dsp(const int8_t *X, int32_t zx, const int8_t *W, const int32_t *ZW, const int32_t *B,
                                 int8_t *Y, int N, int C, int M, int G, const mt_window *g, const mt_requant *q)
{
    const int cg = C / G, plane = g->h * g->w;
    int n, m;
    if (g->kh == 1 && g->kw == 1 && (cg + 3) / 4 * 2 <= MT_S8_PACK) {
        mt_conv_s8_1x1(X, zx, W, ZW, B, Y, N, C, M, G, g, q);
        return 1;
    }
    if (!(g->kh == 3 && g->kw == 3 && g->sh == 1 && g->sw == 1 && g->dh == 1 && g->dw == 1 && cg == 1 && M == G &&
          g->pt < 3 && g->pb < 3 && g->ow >= 2 && g->pl + g->w + g->pr <= MT_S8_DW_ROW))
        return 0;
    for (n = 0; n < N; ++n)
        for (m = 0; m < M; ++m)
            mt_conv_s8_dw3x3_plane(X + ((size_t)n * C + m) * plane, zx, W + (size_t)m * 9, ZW[m], B ? B[m] : 0,
                                   Y + ((size_t)n * M + m) * g->oh * g->ow, g, q, m);
    return 1;
}

#endif
