/* The int8 dot products of the frozen layers (QLinearConv, QGemm, QLinearMatMul) for cores with a
 * vector unit (MT_SIMD): register tiles of MT_VEC int32 lanes (GNU C vectors, kernels/vec.h),
 * each int8 value widened once and multiplied into up to MT_TILE_M accumulators. Integer sums are
 * exact in any order (check_sums in codegen/ops/_qlinear.py keeps every partial sum in int32), so
 * every output is the scalar kernels' integer, bit for bit; the requantization is theirs. */
#ifndef MT_DOT_S8_VEC_H
#define MT_DOT_S8_VEC_H
#include "../mt_common.h"
#include "pool.h"
#include "quant_s8.h"
#include "vec.h"

typedef int8_t mt_vs8 __attribute__((vector_size(MT_VEC)));
typedef int32_t mt_vhalf __attribute__((vector_size(MT_VEC / 2 * sizeof(int32_t))));
typedef int64_t mt_vlong __attribute__((vector_size(MT_VEC / 2 * sizeof(int64_t))));

/* y[0..n) = mt_requant_s8 of acc's first n lanes, all in channel c: the same integers, half a
 * vector at a time in 64 bits (the low bits below the shift decide the rounding to even). */
MT_SPECIALIZE void mt_vrequant_s8(int8_t *y, const mt_veci *acc, int n, const mt_requant *q, int c)
{
    const int k = q->per_channel ? c : 0, s = q->shift[k];
    const mt_vlong zero = {0}, low = zero + (((int64_t)1 << s) - 1), half = zero + ((int64_t)1 << (s - 1));
    const mt_vlong lo = zero + q->lo, hi = zero + q->hi;
    int8_t out[MT_VEC];
    int h, t;
    for (h = 0; h < 2; ++h) {
        mt_vhalf part;
        mt_vlong p, rest, up, below, above;
        memcpy(&part, (const char *)acc + h * sizeof part, sizeof part);
        p = __builtin_convertvector(part, mt_vlong) * (int64_t)q->mult[k];
        rest = p & low;
        p >>= s;
        up = (rest > half) | ((rest == half) & ((p & 1) == 1)); /* -1 where the value rounds up */
        p = p - up + q->zp;
        below = p < lo;
        above = p > hi;
        p = (p & ~(below | above)) | (lo & below) | (hi & above);
        for (t = 0; t < MT_VEC / 2; ++t) out[h * (MT_VEC / 2) + t] = (int8_t)p[t];
    }
    memcpy(y, out, (size_t)n);
}

/* v[t] = row[c0 + t * s] - z where c0 + t * s lies in [0, len), else 0 (a real zero: padding, or
 * lanes past the end). Contiguous lanes load as one vector, at a border through a copy whose
 * lanes outside hold z. */
MT_SPECIALIZE void mt_vload_s8(mt_veci *v, const int8_t *row, int c0, int s, int len, int32_t z)
{
    int32_t buf[MT_VEC];
    int t;
    if (s == 1) {
        const int lo = c0 < 0 ? -c0 : 0, hi = len - c0 < MT_VEC ? len - c0 : MT_VEC;
        mt_vs8 b;
        if (lo == 0 && hi == MT_VEC) {
            memcpy(&b, row + c0, sizeof b);
        } else {
            int8_t part[MT_VEC];
            memset(part, (int8_t)z, sizeof part);
            if (hi > lo) memcpy(part + lo, row + c0 + lo, (size_t)(hi - lo));
            memcpy(&b, part, sizeof b);
        }
        *v = __builtin_convertvector(b, mt_veci) - z;
        return;
    }
    for (t = 0; t < MT_VEC; ++t) {
        const int at = c0 + t * s;
        buf[t] = at >= 0 && at < len ? (int32_t)row[at] - z : 0;
    }
    memcpy(v, buf, sizeof *v);
}

/* Output row oh, columns q0.. (MT_VEC lanes) of the tm output channels m0.. of one group: x is the
 * group's first input plane, y the first of those channels' output planes. */
MT_SPECIALIZE void mt_conv_s8_tile(int tm, const int8_t *x, int32_t zx, const int8_t *W, const int32_t *ZW,
                                   const int32_t *B, int8_t *y, int cg, int m0, int oh, int q0, const mt_window *g,
                                   const mt_requant *q)
{
    const int kk = g->kh * g->kw, plane = g->h * g->w, out = g->oh * g->ow;
    const int n = g->ow - q0 < MT_VEC ? g->ow - q0 : MT_VEC, ih = oh * g->sh - g->pt;
    const mt_veci zero = {0};
    mt_veci acc[MT_TILE_M], v;
    int r, c, i, j, i0, i1;
    mt_span(ih, g->dh, g->kh, g->h, &i0, &i1);
    for (r = 0; r < tm; ++r) acc[r] = zero + (B ? B[m0 + r] : 0);
    for (c = 0; c < cg; ++c) {
        for (i = i0; i < i1; ++i) {
            const int8_t *row = x + (size_t)c * plane + (size_t)(ih + i * g->dh) * g->w;
            for (j = 0; j < g->kw; ++j) {
                const int8_t *w = W + ((size_t)m0 * cg + c) * kk + i * g->kw + j;
                mt_vload_s8(&v, row, q0 * g->sw - g->pl + j * g->dw, g->sw, g->w, zx);
                for (r = 0; r < tm; ++r) acc[r] += v * ((int32_t)w[(size_t)r * cg * kk] - ZW[m0 + r]);
            }
        }
    }
    for (r = 0; r < tm; ++r) mt_vrequant_s8(y + (size_t)r * out + oh * g->ow + q0, &acc[r], n, q, m0 + r);
}

/* Convolutions with one input channel per group (depthwise; a first layer on a gray image) read
 * their plane from a copy widened to int32 (x - zx, 0 in the padding) and split into column phases
 * modulo the stride: every tap of an output row is then MT_VEC contiguous lanes, no border tests.
 * Planes (times the stride) of up to MT_PLANE_S8_MAX values (on the stack) and windows of up to
 * MT_TAPS_S8_MAX taps take this path. */
#define MT_PLANE_S8_MAX 8192
#define MT_TAPS_S8_MAX 64

/* The padded plane's rows and the lanes of each phase row (the last tile's lanes included). */
MT_SPECIALIZE void mt_plane_s8_size(const mt_window *g, int *rows, int *cols)
{
    *rows = (g->oh - 1) * g->sh + (g->kh - 1) * g->dh + 1;
    *cols = g->ow + MT_VEC + (g->kw - 1) * g->dw / g->sw;
}

/* P[phase][row][k] = the padded plane's (row, k * sw + phase) minus zx. */
MT_SPECIALIZE void mt_plane_s8_widen(int32_t *P, const int8_t *x, int32_t zx, int rows, int cols, const mt_window *g)
{
    const int8_t *x_row;
    int ph, r, k, k0, k1;
    for (ph = 0; ph < g->sw; ++ph) {
        mt_span(ph - g->pl, g->sw, cols, g->w, &k0, &k1); /* the lanes inside the input's columns */
        for (r = 0; r < rows; ++r) {
            const int ih = r - g->pt;
            int32_t *p = P + ((size_t)ph * rows + r) * cols;
            memset(p, 0, (size_t)cols * sizeof *p);
            if (ih < 0 || ih >= g->h) continue;
            x_row = x + (size_t)ih * g->w;
            k = k0;
            if (g->sw == 1) {
                for (; k + MT_VEC <= k1; k += MT_VEC) {
                    mt_vs8 b;
                    mt_veci v;
                    memcpy(&b, x_row + k + ph - g->pl, sizeof b);
                    v = __builtin_convertvector(b, mt_veci) - zx;
                    memcpy(p + k, &v, sizeof v);
                }
            }
            for (; k < k1; ++k) p[k] = (int32_t)x_row[k * g->sw + ph - g->pl] - zx;
        }
    }
}

/* Output row oh, columns q0.. of the tm channels m0.. that read plane P (rows of `cols` lanes): tap
 * t at offset off[t] from the row's first lane; wt holds their weights minus the zero points, kk
 * per channel. */
MT_SPECIALIZE void mt_plane_s8_tile(int tm, const int32_t *P, int cols, const int *off, int kk, const int32_t *wt,
                                    const int32_t *B, int8_t *y, int m0, int oh, int q0, const mt_window *g,
                                    const mt_requant *q)
{
    const int out = g->oh * g->ow, n = g->ow - q0 < MT_VEC ? g->ow - q0 : MT_VEC;
    const int32_t *p = P + (size_t)oh * g->sh * cols + q0;
    const mt_veci zero = {0};
    mt_veci acc[MT_TILE_M], v;
    int r, t;
    for (r = 0; r < tm; ++r) acc[r] = zero + (B ? B[m0 + r] : 0);
    for (t = 0; t < kk; ++t) {
        memcpy(&v, p + off[t], sizeof v);
        for (r = 0; r < tm; ++r) acc[r] += v * wt[r * kk + t];
    }
    for (r = 0; r < tm; ++r) mt_vrequant_s8(y + (size_t)r * out + oh * g->ow + q0, &acc[r], n, q, m0 + r);
}

/* mt_conv_s8 for one input channel per group; 0 (nothing done) when the plane or window is too large. */
MT_SPECIALIZE int mt_conv_s8_planes(const int8_t *X, int32_t zx, const int8_t *W, const int32_t *ZW,
                                    const int32_t *B, int8_t *Y, int N, int M, int G, const mt_window *g,
                                    const mt_requant *q)
{
    const int mg = M / G, kk = g->kh * g->kw;
    int32_t P[MT_PLANE_S8_MAX], wt[MT_TILE_M * MT_TAPS_S8_MAX];
    int off[MT_TAPS_S8_MAX], rows, cols, n, m, r, t, oh, q0, tm;
    mt_plane_s8_size(g, &rows, &cols);
    if (kk > MT_TAPS_S8_MAX || (size_t)g->sw * rows * cols > MT_PLANE_S8_MAX) return 0;
    for (t = 0; t < kk; ++t) { /* tap (i, j): phase j dw % sw, row i dh, lane j dw / sw */
        const int i = t / g->kw, col = t % g->kw * g->dw;
        off[t] = (col % g->sw * rows + i * g->dh) * cols + col / g->sw;
    }
    for (n = 0; n < N; ++n) {
        for (m = 0; m < M; m += tm) {
            int8_t *y = Y + ((size_t)n * M + m) * g->oh * g->ow;
            tm = mt_tile_height(mg - m % mg);
            if (m % mg == 0) mt_plane_s8_widen(P, X + ((size_t)n * G + m / mg) * g->h * g->w, zx, rows, cols, g);
            for (r = 0; r < tm; ++r)
                for (t = 0; t < kk; ++t) wt[r * kk + t] = (int32_t)W[(size_t)(m + r) * kk + t] - ZW[m + r];
            for (oh = 0; oh < g->oh; ++oh)
                for (q0 = 0; q0 < g->ow; q0 += MT_VEC)
                    MT_BY_HEIGHT(tm, mt_plane_s8_tile, P, cols, off, kk, wt, B, y, m, oh, q0, g, q);
        }
    }
    return 1;
}

/* mt_conv_s8 (conv_s8.h) on tiles of up to MT_TILE_M output channels of a group; a 1x1, stride-1,
 * unpadded window runs over each plane as one long row. */
MT_OUTLINE void mt_conv_s8_vec(const int8_t *X, int32_t zx, const int8_t *W, const int32_t *ZW, const int32_t *B,
                               int8_t *Y, int N, int C, int M, int G, mt_window g, const mt_requant *q)
{
    const int cg = C / G, mg = M / G, plane = g.h * g.w;
    int n, m, oh, q0, tm;
    if (cg == 1 && mt_conv_s8_planes(X, zx, W, ZW, B, Y, N, M, G, &g, q)) return;
    if (g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && !(g.pt | g.pl | g.pb | g.pr)) {
        g.w = g.ow = plane;
        g.h = g.oh = 1;
    }
    for (n = 0; n < N; ++n) {
        for (m = 0; m < M; m += tm) {
            const int8_t *x = X + ((size_t)n * C + (size_t)(m / mg) * cg) * plane;
            int8_t *y = Y + ((size_t)n * M + m) * g.oh * g.ow;
            tm = mt_tile_height(mg - m % mg);
            for (oh = 0; oh < g.oh; ++oh)
                for (q0 = 0; q0 < g.ow; q0 += MT_VEC)
                    MT_BY_HEIGHT(tm, mt_conv_s8_tile, x, zx, W, ZW, B, y, cg, m, oh, q0, &g, q);
        }
    }
}

/* Y[i][j..j+tm] without transA, with transB: dot products of A's row i and tm rows of B (N, K)
 * along k, MT_VEC lanes at a time, the lanes added at the end. */
MT_SPECIALIZE void mt_gemm_s8_dot_tile(int tm, int i, int j, const int8_t *A, int32_t za, const int8_t *B,
                                       const int32_t *ZB, const int32_t *C, int csm, int csn, int8_t *Y, int K, int N,
                                       const mt_requant *q)
{
    const mt_veci zero = {0};
    mt_veci acc[MT_TILE_M], a, b;
    int r, k, t;
    for (r = 0; r < tm; ++r) acc[r] = zero;
    for (k = 0; k < K; k += MT_VEC) {
        mt_vload_s8(&a, A + (size_t)i * K, k, 1, K, za);
        for (r = 0; r < tm; ++r) {
            mt_vload_s8(&b, B + (size_t)(j + r) * K, k, 1, K, ZB[j + r]);
            acc[r] += a * b;
        }
    }
    for (r = 0; r < tm; ++r) {
        int32_t s = C ? C[(size_t)i * csm + (size_t)(j + r) * csn] : 0;
        for (t = 0; t < MT_VEC; ++t) s += acc[r][t];
        Y[(size_t)i * N + j + r] = mt_requant_s8(s, q, j + r);
    }
}

/* Rows i..i+tm, columns j.. (MT_VEC lanes) of Y without transA or transB: B (K, N) row by row. */
MT_SPECIALIZE void mt_gemm_s8_tile(int tm, int i, int j, const int8_t *A, int32_t za, const int8_t *B,
                                   const int32_t *ZB, const int32_t *C, int csm, int csn, int8_t *Y, int K, int N,
                                   const mt_requant *q)
{
    const int n = N - j < MT_VEC ? N - j : MT_VEC;
    int32_t buf[MT_VEC];
    mt_veci acc[MT_TILE_M], zb, b;
    int r, k, t;
    for (t = 0; t < MT_VEC; ++t) buf[t] = t < n ? ZB[j + t] : 0;
    memcpy(&zb, buf, sizeof zb);
    for (r = 0; r < tm; ++r) {
        for (t = 0; t < MT_VEC; ++t) buf[t] = C && t < n ? C[(size_t)(i + r) * csm + (size_t)(j + t) * csn] : 0;
        memcpy(&acc[r], buf, sizeof acc[r]);
    }
    for (k = 0; k < K; ++k) {
        mt_vload_s8(&b, B + (size_t)k * N, j, 1, N, 0);
        b -= zb;
        for (r = 0; r < tm; ++r) acc[r] += b * ((int32_t)A[(size_t)(i + r) * K + k] - za);
    }
    for (r = 0; r < tm; ++r)
        for (t = 0; t < n; ++t) Y[(size_t)(i + r) * N + j + t] = mt_requant_s8(acc[r][t], q, j + t);
}

/* mt_gemm_s8 (gemm_s8.h) without transA. */
MT_OUTLINE void mt_gemm_s8_vec(const int8_t *A, int32_t za, const int8_t *B, const int32_t *ZB, const int32_t *C,
                               int csm, int csn, int8_t *Y, int M, int K, int N, int transB, const mt_requant *q)
{
    int i, j, tm;
    if (transB) {
        for (i = 0; i < M; ++i) {
            for (j = 0; j < N; j += tm) {
                tm = mt_tile_height(N - j);
                MT_BY_HEIGHT(tm, mt_gemm_s8_dot_tile, i, j, A, za, B, ZB, C, csm, csn, Y, K, N, q);
            }
        }
        return;
    }
    for (i = 0; i < M; i += tm) {
        tm = mt_tile_height(M - i);
        for (j = 0; j < N; j += MT_VEC)
            MT_BY_HEIGHT(tm, mt_gemm_s8_tile, i, j, A, za, B, ZB, C, csm, csn, Y, K, N, q);
    }
}

#endif
