/* mt_conv_s8 on cores with the DSP extension (Cortex-M4/M7/M33), included by conv_s8.h: SMLAD
 * multiplies two int16 pairs and adds both products to an accumulator, two MACs in one
 * instruction; SXTB16 turns the int8 bytes 0, 2 (or 1, 3) of a word into such a pair. Integer
 * sums, so the same results as the portable code in any order. The weights stay the model's
 * int8 array.
 * - 1x1 kernels (pointwise; any stride, padding, groups, up to 256 channels a group): the inputs
 *   x - zx of a tile of output pixels are packed once on the stack as int16 pairs, then for each
 *   pair of output channels their weights w - zw too (SXTB16 of the int8 words), and the two rows
 *   run over the tile, 2 channels x 3 pixels at a time: per 2 input channels one LDM (3 pixels),
 *   one LDRD (2 rows) and 6 SMLAD. The requantization (SMMLA, shift, SSAT) skips the test for a
 *   rounding tie where none can occur (mt_s8_rq_tie_free).
 * - depthwise 3x3, stride 1, undilated: each input row is copied once with its padding (pad
 *   bytes zx) into a ring of 3 rows; two adjacent output pixels read 4 input bytes per kernel row,
 *   SXTB16 splits them into the pairs (x0, x2) and (x1, x3) that meet the packed (w0, w2); w1 takes
 *   a single MAC. zx is folded into the bias as zx * sum(w).
 * Other shapes return 0: conv_s8.h's portable code runs them. */
#ifndef MT_CONV_S8_DSP_H
#define MT_CONV_S8_DSP_H
#include <arm_acle.h>

/* The 1x1 path's scratch on the stack, in words (an int16 pair each): two packed weight rows (and
 * 10 words after them), the rest a tile of packed input pixels; 2.5 KiB, a group of up to 256
 * channels (the 8 KiB stack reserve of a board also holds the callers' frames). */
#define MT_S8_SCRATCH 650

/* Pixel triples in a tile of the 1x1 path with cp channels (0: cp too large). */
static inline int mt_s8_1x1_tile(int cp)
{
    return (MT_S8_SCRATCH - cp - 10) / (3 * (cp / 2));
}

/* The 1x1 loops in assembly: GCC does not emit LDM/STM for C loads and stores, and spills around
 * them. */
#if defined(__ARM_FEATURE_DSP) && defined(__OPTIMIZE__) /* (unoptimized, GCC finds no 13 registers) */
#define MT_S8_ASM 1
#else
#define MT_S8_ASM 0
#endif

/* The pair after the packed weight rows (mt_s8_dot2x3's loop ends there): lanes of 0x4000, far
 * out of a packed value's [-255, 255]. */
#define MT_S8_END 0x40004000

/* The word of int16 values lo, hi (x - zx or w - zw, within [-255, 255]): PKHBT (GCC makes two
 * instructions of the C). */
static inline uint32_t mt_s8_pair(int32_t lo, int32_t hi)
{
#if defined(__ARM_FEATURE_DSP)
    uint32_t v;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(v) : "r"(lo), "r"(hi));
    return v;
#else
    return ((uint32_t)lo & 0xffffu) | ((uint32_t)hi << 16);
#endif
}

/* 4 int8 from p (any alignment: LDR) as a word, byte 0 lowest. */
static inline uint32_t mt_s8_word(const int8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v); /* little-endian */
    return v;
}

/* SXTB16 of bytes 1 and 3: one instruction (SXTB16 ROR 8; GCC's __sxtb16(v >> 8) takes two). */
#if defined(__ARM_FEATURE_DSP)
static inline uint32_t mt_s8_sxtb16_13(uint32_t v)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}
#else
#define mt_s8_sxtb16_13(v) __sxtb16((v) >> 8)
#endif

/* The 1x1 path packs the channels of a pixel and of a weight row as int16 pairs in the order
 * SXTB16 and SXTB16 ROR 8 make of an int8 word of channels 4k..4k+3: pair 2k holds channels
 * (4k, 4k + 2), pair 2k + 1 (4k + 1, 4k + 3). Three pixels interleave (pair j of each in words
 * 3j..3j+2: one LDM), two weight rows too (words 2j, 2j+1: one LDRD). Channels past the group
 * are 0, up to cp (a multiple of 8). */

/* Pairs (v0, v2) and (v1, v3) of v_i = p[i step] - z for i < n, 0 for i >= n. */
static inline void mt_s8_quad(const int8_t *p, size_t step, int n, int32_t z, uint32_t *even, uint32_t *odd)
{
    int32_t v[4];
    int i;
    for (i = 0; i < 4; ++i) v[i] = i < n ? p[i * step] - z : 0;
    *even = mt_s8_pair(v[0], v[2]);
    *odd = mt_s8_pair(v[1], v[3]);
}

/* The x - zx of the input pixel at plane offset o (-1: padding, all 0) into every third word. */
static inline void mt_s8_pack_x(const int8_t *x, size_t plane, int cg, int cp, int o, int32_t zx, uint32_t *out)
{
    const uint32_t zz = mt_s8_pair(zx, zx);
    int c = 0;
    if (o >= 0)
        for (x += o; c + 4 <= cg; c += 4, x += 4 * plane, out += 6) { /* whole groups of 4 channels */
            out[0] = __ssub16(mt_s8_pair(x[0], x[2 * plane]), zz);
            out[3] = __ssub16(mt_s8_pair(x[plane], x[3 * plane]), zz);
        }
    for (; c < cp; c += 4, x += 4 * plane, out += 6) /* padding, the last 1-3 channels, zeros */
        mt_s8_quad(x, plane, o >= 0 ? cg - c : 0, zx, &out[0], &out[3]);
}

/* Whole groups of 4 channels of weight rows wa and wb, w - zw interleaved; returns where they
 * end. sub = 0: the zero points are 0 (symmetric weights), nothing subtracted. */
static inline int mt_s8_pack_w4(const int8_t *wa, const int8_t *wb, int cg, uint32_t zza, uint32_t zzb, int sub,
                                uint32_t *out)
{
    int c = 0;
#if MT_S8_ASM
    if (!sub && cg >= 4) { /* LDR, LDR, 4 SXTB16, STM a group (GCC's C: 4 STR and pointer updates) */
        register uint32_t s02 __asm__("r0"), t02 __asm__("r1"), s13 __asm__("r2"), t13 __asm__("r3");
        const uint32_t *end = out + cg / 4 * 4;
        __asm__ volatile("1:\n\t"
                         "ldr %[s13], [%[a]], #4\n\t"
                         "ldr %[t13], [%[a], %[b]]\n\t"
                         "sxtb16 %[s02], %[s13]\n\t"
                         "sxtb16 %[t02], %[t13]\n\t"
                         "sxtb16 %[s13], %[s13], ror #8\n\t"
                         "sxtb16 %[t13], %[t13], ror #8\n\t"
                         "stmia %[o]!, {%[s02], %[t02], %[s13], %[t13]}\n\t"
                         "cmp %[o], %[end]\n\t"
                         "bne 1b"
                         : [a] "+r"(wa), [o] "+r"(out), [s02] "=&r"(s02), [t02] "=&r"(t02), [s13] "=&r"(s13),
                           [t13] "=&r"(t13)
                         : [b] "r"(wb - wa - 4), [end] "r"(end)
                         : "cc", "memory");
        return cg / 4 * 4;
    }
#endif
    for (; c + 4 <= cg; c += 4, out += 4) {
        const uint32_t s = mt_s8_word(wa + c), t = mt_s8_word(wb + c);
        uint32_t s02 = __sxtb16(s), s13 = mt_s8_sxtb16_13(s), t02 = __sxtb16(t), t13 = mt_s8_sxtb16_13(t);
        if (sub) {
            s02 = __ssub16(s02, zza);
            s13 = __ssub16(s13, zza);
            t02 = __ssub16(t02, zzb);
            t13 = __ssub16(t13, zzb);
        }
        out[0] = s02;
        out[1] = t02;
        out[2] = s13;
        out[3] = t13;
    }
    return c;
}

/* The w - zw of weight rows wa and wb, interleaved. */
static inline void mt_s8_pack_w(const int8_t *wa, const int8_t *wb, int cg, int cp, int32_t za, int32_t zb,
                                uint32_t *out)
{
    const uint32_t zza = mt_s8_pair(za, za), zzb = mt_s8_pair(zb, zb);
    int c = za || zb ? mt_s8_pack_w4(wa, wb, cg, zza, zzb, 1, out) : mt_s8_pack_w4(wa, wb, cg, 0, 0, 0, out);
    for (out += c; c < cp; c += 4, out += 4) { /* the last 1-3 channels (the row may end the array), zeros */
        mt_s8_quad(wa + c, 1, cg - c, za, &out[0], &out[2]);
        mt_s8_quad(wb + c, 1, cg - c, zb, &out[1], &out[3]);
    }
    out[0] = out[1] = MT_S8_END;
}

/* Plane offset of the input tap of output pixel p of a 1x1 window, -1 in the padding. */
static inline int mt_s8_1x1_offset(const mt_window *g, int p)
{
    const int ih = p / g->ow * g->sh - g->pt, iw = p % g->ow * g->sw - g->pl;
    return ih >= 0 && ih < g->h && iw >= 0 && iw < g->w ? ih * g->w + iw : -1;
}

/* One output channel's requantization, read once: the same bits as mt_requant_s8. With a shift
 * n = 32 + s, s in 1..21, of the 64-bit product hi * 2^32 + lo only hi matters unless lo = 0
 * (a possible tie, then mt_requant_s8): y = sat8((hi + 2^(s-1) + zp 2^s) >> s), rounding half up,
 * the same as half to even away from ties. Other shifts or bounds take mult = 0: every output
 * then goes to mt_requant_s8. */
typedef struct {
    int32_t mult, k, s, c;
} mt_s8_rq;

static inline mt_s8_rq mt_s8_rq_of(const mt_requant *q, int c)
{
    const int i = q->per_channel ? c : 0;
    mt_s8_rq r;
    r.s = q->shift[i] - 32;
    r.mult = r.s >= 1 && r.s <= 21 && q->lo == -128 && q->hi == 127 ? q->mult[i] : 0;
    r.k = r.mult ? (1 << (r.s - 1)) + q->zp * (1 << r.s) : 0; /* |k| < 2^29, |hi| <= 2^30 */
    r.c = c;
    return r;
}

/* 1 when no accumulator within +-bound can tie with multiplier m (lo = 0 needs acc a multiple of
 * 2^32 / the lowest set bit of m, and 0 is no tie): mt_s8_rq_fast is then exact, with no test. */
static inline int mt_s8_rq_tie_free(uint32_t m, uint32_t bound)
{
    return m && (uint64_t)bound * (m & (0u - m)) >> 32 == 0;
}

/* hi + c (hi: the high word of a * b): SMMLA. */
#if defined(__ARM_FEATURE_DSP)
static inline int32_t mt_s8_smmla(int32_t a, int32_t b, int32_t c)
{
    int32_t v;
    __asm__("smmla %0, %1, %2, %3" : "=r"(v) : "r"(a), "r"(b), "r"(c));
    return v;
}
#else
#define mt_s8_smmla(a, b, c) ((int32_t)((int64_t)(a) * (b) >> 32) + (c))
#endif

/* The requantization rounding half up (exact when lo != 0). */
static inline int32_t mt_s8_rq_fast(const mt_s8_rq *r, int32_t acc)
{
    const int32_t v = mt_s8_smmla(acc, r->mult, r->k) >> r->s;
#if defined(__ARM_FEATURE_SAT)
    return __ssat(v, 8); /* (GCC turns a C clamp into branches here) */
#else
    return v < -128 ? -128 : v > 127 ? 127 : v;
#endif
}

/* mt_requant_s8 out of line, for the rare outputs that need it (inlined, its int8 result merged
 * with the fast path's costs a sign extension on every output). */
MT_OUTLINE int32_t mt_s8_rq_exact(int32_t acc, const mt_requant *q, int c)
{
    return mt_requant_s8(acc, q, c);
}

static inline int32_t mt_s8_rq_apply(const mt_s8_rq *r, const mt_requant *q, int32_t acc)
{
    if ((uint32_t)acc * (uint32_t)r->mult == 0) return mt_s8_rq_exact(acc, q, r->c); /* lo = 0 */
    return mt_s8_rq_fast(r, acc);
}

#if MT_S8_ASM
/* acc += 3 pixels x 2 rows over cp / 2 pairs (a multiple of 4) of the packs x and w, x then at the
 * next triple. Per pair: LDM (3 pixels), 6 SMLAD, LDRD (the next pair of the 2 rows), 8 pairs a
 * loop, which ends at the pair MT_S8_END after the rows: 13 registers (a frame pointer may take a
 * 14th); the LDM's registers x0-x2 (r0-r2, and w0: r3, below) must ascend. */
#define MT_S8_STEP                                         \
    "ldmia %[x]!, {%[x0], %[x1], %[x2]}\n\t"               \
    "smlad %[a0], %[x0], %[w0], %[a0]\n\t"                 \
    "smlad %[a1], %[x1], %[w0], %[a1]\n\t"                 \
    "smlad %[a2], %[x2], %[w0], %[a2]\n\t"                 \
    "smlad %[b0], %[x0], %[w1], %[b0]\n\t"                 \
    "smlad %[b1], %[x1], %[w1], %[b1]\n\t"                 \
    "smlad %[b2], %[x2], %[w1], %[b2]\n\t"                 \
    "ldrd %[w0], %[w1], [%[w]], #8\n\t"
#define MT_S8_DOT                                                              \
    "ldrd %[w0], %[w1], [%[w]], #8\n\t"                                        \
    "cmp %[x1], #0\n\t" /* 4 pairs first when their number is not a multiple of 8 */ \
    "bne 2f\n\t"                                                               \
    "1:\n\t" MT_S8_STEP MT_S8_STEP MT_S8_STEP MT_S8_STEP                       \
    "2:\n\t" MT_S8_STEP MT_S8_STEP MT_S8_STEP MT_S8_STEP                       \
    "cmp %[w0], %[end]\n\t"                                                    \
    "bne 1b\n\t"
#define MT_S8_DOT_OPERANDS                                                                                  \
    [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [b0] "+r"(b0), [b1] "+r"(b1), [b2] "+r"(b2), [x] "+r"(x), \
        [w] "+r"(w), [x0] "=&r"(x0), [x1] "+r"(x1), [x2] "=&r"(x2), [w0] "=&r"(w0), [w1] "=&r"(w1)
/* One row's 3 outputs after the dot loop (w at the row's mult, k, s, output pointer): SMMLA,
 * shift, SSAT, store, and the pointer moved on. */
#define MT_S8_ROW_OUT(a)                                                              \
    "ldmia %[w]!, {%[x0], %[x1], %[x2], %[w0]}\n\t"                                   \
    "smmla %[" #a "0], %[" #a "0], %[x0], %[x1]\n\t"                                  \
    "smmla %[" #a "1], %[" #a "1], %[x0], %[x1]\n\t"                                  \
    "smmla %[" #a "2], %[" #a "2], %[x0], %[x1]\n\t"                                  \
    "asr %[" #a "0], %[" #a "0], %[x2]\n\t"                                           \
    "asr %[" #a "1], %[" #a "1], %[x2]\n\t"                                           \
    "asr %[" #a "2], %[" #a "2], %[x2]\n\t"                                           \
    "ssat %[" #a "0], #8, %[" #a "0]\n\t"                                             \
    "ssat %[" #a "1], #8, %[" #a "1]\n\t"                                             \
    "ssat %[" #a "2], #8, %[" #a "2]\n\t"                                             \
    "strb %[" #a "0], [%[w0]]\n\t"                                                    \
    "strb %[" #a "1], [%[w0], #1]\n\t"                                                \
    "strb %[" #a "2], [%[w0], #2]\n\t"                                                \
    "adds %[w0], %[w0], #3\n\t"                                                       \
    "str %[w0], [%[w], #-4]\n\t"
#define MT_S8_REGS                                                                                   \
    register uint32_t x0 __asm__("r0"), x1 __asm__("r1") = (uint32_t)(cp % 16), x2 __asm__("r2"), \
        w0 __asm__("r3");                                                                            \
    uint32_t w1
#endif

/* acc[3i + j] += pixel j . row i over cp / 2 pairs of the packs x and w. */
static inline __attribute__((always_inline)) void mt_s8_dot2x3(const uint32_t *x, const uint32_t *w, int cp,
                                                               int32_t *acc)
{
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], b0 = acc[3], b1 = acc[4], b2 = acc[5];
#if MT_S8_ASM
    MT_S8_REGS;
    __asm__(MT_S8_DOT : MT_S8_DOT_OPERANDS : [end] "i"(MT_S8_END) : "cc", "memory");
#else
    const uint32_t *end = w + cp;
    for (; w != end; x += 3, w += 2) {
        a0 = __smlad(x[0], w[0], a0);
        a1 = __smlad(x[1], w[0], a1);
        a2 = __smlad(x[2], w[0], a2);
        b0 = __smlad(x[0], w[1], b0);
        b1 = __smlad(x[1], w[1], b1);
        b2 = __smlad(x[2], w[1], b2);
    }
#endif
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = b0;
    acc[4] = b1;
    acc[5] = b2;
}

#if MT_S8_ASM
/* mt_s8_dot2x3 from the biases, then the 6 outputs requantized (mt_s8_rq_fast) and stored
 * through the pointers of the words after the end pair (mt_s8_1x1_fast); returns the next x. */
static inline __attribute__((always_inline)) const uint32_t *mt_s8_dot2x3_out(const uint32_t *x, const uint32_t *w,
                                                                             int cp, int32_t bias0, int32_t bias1)
{
    int32_t a0 = bias0, a1 = bias0, a2 = bias0, b0 = bias1, b1 = bias1, b2 = bias1;
    MT_S8_REGS;
    __asm__ volatile(MT_S8_DOT MT_S8_ROW_OUT(a) MT_S8_ROW_OUT(b) /* (volatile: it stores) */
                     : MT_S8_DOT_OPERANDS
                     : [end] "i"(MT_S8_END)
                     : "cc", "memory");
    return x;
}
#undef MT_S8_STEP
#undef MT_S8_DOT
#undef MT_S8_DOT_OPERANDS
#undef MT_S8_ROW_OUT
#undef MT_S8_REGS
#endif

/* Row m's requantization (mult, k, s) into the words at; 1 when it is tie-free with bias b (and
 * `full`: the bounds are the int8 range). zk = 2 zp + 1: k = zk 2^(s-1). */
static inline int mt_s8_1x1_row(const mt_requant *q, int m, int full, int32_t zk, int32_t b, uint32_t sums,
                                uint32_t *at)
{
    const int i = q->per_channel ? m : 0;
    const int32_t mult = q->mult[i], s = q->shift[i] - 32;
    at[0] = (uint32_t)mult;
    at[2] = (uint32_t)s;
    if (!full || (uint32_t)(s - 1) >= 21) return 0;
    at[1] = (uint32_t)zk << (s - 1);
    return mt_s8_rq_tie_free((uint32_t)mult, sums + (b < 0 ? 0u - (uint32_t)b : (uint32_t)b));
}

/* Output rows y0, y1 (biases b0, b1) of `count` pixel triples of the tile x, both rows tie-free,
 * their requantization in the words after the end pair of w (mt_s8_1x1_row). */
static inline __attribute__((always_inline)) void mt_s8_1x1_fast(const uint32_t *x, uint32_t *w, int cp, int count,
                                                                 int8_t *y0, int8_t *y1, int32_t b0, int32_t b1)
{
    uint32_t *at = w + cp + 2;
    int i;
#if MT_S8_ASM
    at[3] = (uint32_t)(uintptr_t)y0;
    at[7] = (uint32_t)(uintptr_t)y1;
    for (i = 0; i < count; ++i) x = mt_s8_dot2x3_out(x, w, cp, b0, b1);
#else
    const mt_s8_rq r0 = {(int32_t)at[0], (int32_t)at[1], (int32_t)at[2], 0},
                   r1 = {(int32_t)at[4], (int32_t)at[5], (int32_t)at[6], 0};
    int32_t acc[6];
    int k;
    for (i = 0; i < count; ++i, x += 3 * (cp / 2), y0 += 3, y1 += 3) {
        acc[0] = acc[1] = acc[2] = b0;
        acc[3] = acc[4] = acc[5] = b1;
        mt_s8_dot2x3(x, w, cp, acc);
        for (k = 0; k < 3; ++k) {
            y0[k] = (int8_t)mt_s8_rq_fast(&r0, acc[k]);
            y1[k] = (int8_t)mt_s8_rq_fast(&r1, acc[3 + k]);
        }
    }
#endif
}

/* The same for rows m0, m1 that may tie (rare), and the first n pixels of each triple:
 * mt_requant_s8 for every output. */
static inline void mt_s8_1x1_exact(const uint32_t *x, const uint32_t *w, int cp, int count, int n, int8_t *y0,
                                   int8_t *y1, int m0, int m1, int32_t b0, int32_t b1, const mt_requant *q)
{
    int32_t acc[6];
    int i, k;
    for (i = 0; i < count; ++i, x += 3 * (cp / 2), y0 += 3, y1 += 3) {
        acc[0] = acc[1] = acc[2] = b0;
        acc[3] = acc[4] = acc[5] = b1;
        mt_s8_dot2x3(x, w, cp, acc);
        for (k = 0; k < n; ++k) {
            y0[k] = (int8_t)mt_s8_rq_exact(acc[k], q, m0);
            y1[k] = (int8_t)mt_s8_rq_exact(acc[3 + k], q, m1);
        }
    }
}

/* 1x1 kernels, two output channels x three output pixels at a time; an odd last channel is
 * paired with itself (computed twice, stored once). A tile of pixels is packed once, then for
 * each pair of channels the two weight rows are packed and run over the tile: the int8 to int16
 * expansion of both sides is amortized. */
static inline void mt_conv_s8_1x1(const int8_t *X, int32_t zx, const int8_t *W, const int32_t *ZW, const int32_t *B,
                                  int8_t *Y, int N, int C, int M, int G, const mt_window *g, const mt_requant *q)
{
    const int cg = C / G, mg = M / G, cp = (cg + 7) / 8 * 8, plane = g->h * g->w, out = g->oh * g->ow;
    const int tile = mt_s8_1x1_tile(cp);
    const uint32_t sums = (uint32_t)cg * 255 * 255; /* the largest |sum (x - zx)(w - zw)|, < 2^24 */
    const mt_requant rq = *q; /* (a copy: the int8 stores to Y could alias *q) */
    const int full8 = rq.lo == -128 && rq.hi == 127;
    const int32_t zk = 2 * rq.zp + 1;
    uint32_t xt[MT_S8_SCRATCH], *ww = xt + 3 * (cp / 2) * tile;
    int n, gi, p, i, j;
    for (n = 0; n < N; ++n) {
        for (gi = 0; gi < G; ++gi) {
            const int8_t *x = X + ((size_t)n * C + (size_t)gi * cg) * plane;
            for (p = 0; p < out; p += 3 * tile) {
                const int pixels = out - p < 3 * tile ? out - p : 3 * tile, full = pixels / 3, rest = pixels % 3;
                for (i = 0; i < 3 * (full + (rest > 0)); ++i) /* a partial last triple repeats its last pixel */
                    mt_s8_pack_x(x, (size_t)plane, cg, cp, mt_s8_1x1_offset(g, p + (i < pixels ? i : pixels - 1)),
                                 zx, xt + i / 3 * 3 * (cp / 2) + i % 3);
                for (j = 0; j < mg; j += 2) {
                    const int m0 = gi * mg + j, m1 = j + 1 < mg ? m0 + 1 : m0;
                    const int32_t b0 = B ? B[m0] : 0, b1 = B ? B[m1] : 0;
                    int8_t *y0 = Y + ((size_t)n * M + m0) * out + p, *y1 = Y + ((size_t)n * M + m1) * out + p;
                    mt_s8_pack_w(W + (size_t)m0 * cg, W + (size_t)m1 * cg, cg, cp, ZW[m0], ZW[m1], ww);
                    if (mt_s8_1x1_row(&rq, m0, full8, zk, b0, sums, ww + cp + 2) &
                        mt_s8_1x1_row(&rq, m1, full8, zk, b1, sums, ww + cp + 6))
                        mt_s8_1x1_fast(xt, ww, cp, full, y0, y1, b0, b1);
                    else
                        mt_s8_1x1_exact(xt, ww, cp, full, 3, y0, y1, m0, m1, b0, b1, &rq);
                    if (rest)
                        mt_s8_1x1_exact(xt + full * 3 * (cp / 2), ww, cp, 1, rest, y0 + 3 * full, y1 + 3 * full, m0,
                                        m1, b0, b1, &rq);
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
            yr[at] = (int8_t)mt_s8_rq_apply(&rq, q, a);
            yr[at + 1] = (int8_t)mt_s8_rq_apply(&rq, q, c);
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
    if (g->kh == 1 && g->kw == 1 && mt_s8_1x1_tile((cg + 7) / 8 * 8) > 0) {
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
