/* conv.h for cores with a vector unit. Each kernel computes tiles of up to MT_TILE_M channels
 * times MT_VEC adjacent pixels of one row in vector registers: channels of one group share each
 * row segment they read; in a depthwise convolution each reads its own plane (xs apart). Forward
 * and dX sum each output in the order of conv_rows.h (bias, channels, taps); dW keeps MT_VEC lanes. */
#ifndef MT_CONV_TILES_H
#define MT_CONV_TILES_H
#include "../mt_common.h"
#include "pool.h"
#include "vec.h"

/* One strided tap: v[t] = row[c0 + t*s] (s < 0: row[(c0 + t) / -s] where -s divides c0 + t, the
 * transposed read), 0 outside [0, len). */
MT_SPECIALIZE void mt_vload_strided(mt_vec *v, const float *row, int c0, int s, int len)
{
    const mt_veci lane = {0, 1, 2, 3, 4, 5, 6, 7};
    mt_veci at, inside;
    if (s > 0) {
        at = c0 + lane * s;
        inside = (at >= 0) & (at < len);
    } else {
        const mt_veci num = c0 + lane;
        at = num / -s;
        inside = (num >= 0) & (at * -s == num) & (at < len);
    }
    mt_vgather(v, row, &at, &inside);
}

/* The tile's first column for column q of a row of n: the last tile ends at the row's end,
 * overlapping the one before, unless the whole row is shorter than a tile. */
static inline int mt_tile_col(int q, int n)
{
    return q + MT_VEC > n && n >= MT_VEC ? n - MT_VEC : q;
}

/* acc[r] += w[r * ws] * v for the tile's tm rows. */
MT_SPECIALIZE void mt_tile_axpy(mt_vec *acc, int tm, const float *w, size_t ws, const mt_vec *v)
{
    int r;
    for (r = 0; r < tm; ++r) mt_vaxpy(&acc[r], w[(size_t)r * ws], v);
}

/* v = the MT_VEC values row[c0 + t*s] (s < 0: transposed, see mt_vload_strided), 0 outside [0, len). */
MT_SPECIALIZE void mt_vload_tap(mt_vec *v, const float *row, int c0, int s, int len)
{
    if (s == 1) mt_vload_row(v, row, c0, len);
    else mt_vload_strided(v, row, c0, s, len);
}

/* The kw taps of one tile row: acc[r] += w[r * ws + j] * (the values tap j reads in the row of
 * channel r, row + r * xs: one row for all when xs = 0), tap j reading from column c0 + j*step. */
MT_SPECIALIZE void mt_tile_taps(mt_vec *acc, int tm, const float *w, size_t ws, const float *row, size_t xs, int c0,
                                int step, int s, int len, int kw)
{
    mt_vec v;
    int j, r;
    for (j = 0; j < kw; ++j) {
        if (!xs) {
            mt_vload_tap(&v, row, c0 + j * step, s, len);
            mt_tile_axpy(acc, tm, w + j, ws, &v);
            continue;
        }
        for (r = 0; r < tm; ++r) {
            mt_vload_tap(&v, row + (size_t)r * xs, c0 + j * step, s, len);
            mt_vaxpy(&acc[r], w[(size_t)r * ws + j], &v);
        }
    }
}

/* Stores the first n lanes of the tile's tm rows; row r goes to y + r * ys. */
MT_SPECIALIZE void mt_tile_store(const mt_vec *acc, int tm, int n, float *y, size_t ys)
{
    int r;
    for (r = 0; r < tm; ++r) mt_vstore(y + (size_t)r * ys, &acc[r], n);
}

/* Forward tile: output channels m..m+tm of image x (the planes of their group), output row o,
 * columns from q. */
MT_SPECIALIZE void mt_conv_tile(int tm, const float *x, size_t xs, const float *W, const float *B, float *y, int m,
                                int o, int q, int cg, mt_window g)
{
    const size_t kk = (size_t)cg * g.kh * g.kw;
    mt_vec acc[MT_TILE_M];
    int r, c, i;
    for (r = 0; r < tm; ++r) mt_vset(&acc[r], B ? B[m + r] : 0.0f);
    for (c = 0; c < cg; ++c) {
        for (i = 0; i < g.kh; ++i) {
            const int row = o * g.sh + i * g.dh - g.pt;
            if (row < 0 || row >= g.h) continue;
            mt_tile_taps(acc, tm, W + m * kk + ((size_t)c * g.kh + i) * g.kw, kk,
                         x + ((size_t)c * g.h + row) * g.w, xs, q * g.sw - g.pl, g.dw, g.sw, g.w, g.kw);
        }
    }
    mt_tile_store(acc, tm, g.ow < MT_VEC ? g.ow : MT_VEC, y + ((size_t)m * g.oh + o) * g.ow + q,
                  (size_t)g.oh * g.ow);
}

MT_SPECIALIZE void mt_conv(const float *MT_RESTRICT X, const float *MT_RESTRICT W, const float *MT_RESTRICT B,
                           float *MT_RESTRICT Y, int N, int C, int M, int G, mt_window g)
{
    const int cg = C / G, mg = M / G, dw = cg == 1 && mg == 1;
    const size_t xs = dw ? (size_t)g.h * g.w : 0;
    int n, m, o, q, tm;
    for (n = 0; n < N; ++n) {
        float *y = Y + (size_t)n * M * g.oh * g.ow;
        for (m = 0; m < M; m += tm) {
            const float *x = X + ((size_t)n * C + (size_t)(m / mg) * cg) * g.h * g.w;
            tm = mt_tile_height(dw ? M - m : mg - m % mg);
            for (o = 0; o < g.oh; ++o) {
                for (q = 0; q < g.ow; q += MT_VEC)
                    MT_BY_HEIGHT(tm, mt_conv_tile, x, xs, W, B, y, m, o, mt_tile_col(q, g.ow), cg, g);
            }
        }
    }
}

/* dX tile: input channels c..c+tc of one image, input row h0, columns from w0: each pixel sums,
 * over the group's output channels then taps, W times the dY pixel that read it. */
MT_SPECIALIZE void mt_conv_grad_x_tile(int tc, const float *dy, size_t ds, const float *W, float *dx, int c, int h0,
                                       int w0, int cg, int mg, mt_window g)
{
    const int kk = g.kh * g.kw, oplane = g.oh * g.ow, gi = c / cg;
    mt_vec acc[MT_TILE_M];
    int r, m, i;
    for (r = 0; r < tc; ++r) mt_vset(&acc[r], 0.0f);
    for (m = gi * mg; m < (gi + 1) * mg; ++m) {
        for (i = 0; i < g.kh; ++i) {
            const int num = h0 + g.pt - i * g.dh, o = num / g.sh;
            if (num < 0 || num % g.sh || o >= g.oh) continue;
            mt_tile_taps(acc, tc, W + ((size_t)m * cg + c % cg) * kk + i * g.kw, (size_t)kk,
                         dy + (size_t)m * oplane + (size_t)o * g.ow, ds, w0 + g.pl, -g.dw, g.sw == 1 ? 1 : -g.sw,
                         g.ow, g.kw);
        }
    }
    mt_tile_store(acc, tc, g.w < MT_VEC ? g.w : MT_VEC, dx + ((size_t)c * g.h + h0) * g.w + w0,
                  (size_t)g.h * g.w);
}

MT_SPECIALIZE void mt_conv_grad_x(const float *MT_RESTRICT dY, const float *MT_RESTRICT W, float *MT_RESTRICT dX,
                                  int N, int C, int M, int G, mt_window g)
{
    const int cg = C / G, mg = M / G, dw = cg == 1 && mg == 1;
    const size_t ds = dw ? (size_t)g.oh * g.ow : 0;
    int n, c, h0, w0, tc;
    for (n = 0; n < N; ++n) {
        const float *dy = dY + (size_t)n * M * g.oh * g.ow;
        float *dx = dX + (size_t)n * C * g.h * g.w;
        for (c = 0; c < C; c += tc) {
            tc = mt_tile_height(dw ? C - c : cg - c % cg);
            for (h0 = 0; h0 < g.h; ++h0) {
                for (w0 = 0; w0 < g.w; w0 += MT_VEC)
                    MT_BY_HEIGHT(tc, mt_conv_grad_x_tile, dy, ds, W, dx, c, h0, mt_tile_col(w0, g.w), cg, mg, g);
            }
        }
    }
}

/* dW tile: tap (i, j) of input channel c (within the group) for output channels m..m+tm: MT_VEC
 * lanes of dY times the input the tap read, over images, rows, columns. The last column tile
 * overlaps the one before; its repeated lanes are masked in the input. */
MT_SPECIALIZE void mt_conv_grad_w_tile(int tm, const float *dY, const float *X, size_t xs, float *dW, int m, int c,
                                       int i, int j, int N, int C, int M, int cg, int mg, mt_window g, float scale,
                                       float keep)
{
    const size_t oplane = (size_t)g.oh * g.ow, kk = (size_t)cg * g.kh * g.kw;
    mt_vec acc[MT_TILE_M], v, d;
    int r, b, o, q, o0, o1;
    for (r = 0; r < tm; ++r) mt_vset(&acc[r], 0.0f);
    mt_span(i * g.dh - g.pt, g.sh, g.oh, g.h, &o0, &o1); /* output rows whose tap i is inside */
    for (b = 0; b < N; ++b) {
        const float *x = X + ((size_t)b * C + (size_t)(m / mg) * cg + c) * g.h * g.w;
        for (o = o0; o < o1; ++o) {
            const float *xr = x + (size_t)(o * g.sh + i * g.dh - g.pt) * g.w;
            const float *dy = dY + ((size_t)b * M + m) * oplane + (size_t)o * g.ow;
            for (q = 0; q < g.ow; q += MT_VEC) {
                const int q0 = mt_tile_col(q, g.ow), c0 = q0 * g.sw + j * g.dw - g.pl;
                const int len = g.ow < MT_VEC && c0 + g.ow * g.sw < g.w ? c0 + g.ow * g.sw : g.w; /* no lane >= ow */
                for (r = 0; r < tm; ++r) {
                    if (r == 0 || xs) {
                        mt_vload_tap(&v, xr + (size_t)r * xs, c0, g.sw, len);
                        mt_vmask_below(&v, q - q0);
                    }
                    mt_vload_row(&d, dy + (size_t)r * oplane, q0, g.ow);
                    mt_vmla(&acc[r], &d, &v);
                }
            }
        }
    }
    for (r = 0; r < tm; ++r) {
        float *out = dW + (size_t)(m + r) * kk + ((size_t)c * g.kh + i) * g.kw + j;
        *out = mt_update(*out, mt_lanes_sum(&acc[r]), scale, keep);
    }
}

MT_SPECIALIZE void mt_conv_grad_w(const float *dY, const float *X, float *dW, int N, int C, int M,
                                  int G, mt_window g, float scale, float keep)
{
    const int cg = C / G, mg = M / G, dw = cg == 1 && mg == 1;
    const size_t xs = dw ? (size_t)g.h * g.w : 0;
    int m, c, i, j, tm;
    for (m = 0; m < M; m += tm) {
        tm = mt_tile_height(dw ? M - m : mg - m % mg);
        for (c = 0; c < cg; ++c) {
            for (i = 0; i < g.kh; ++i) {
                for (j = 0; j < g.kw; ++j)
                    MT_BY_HEIGHT(tm, mt_conv_grad_w_tile, dY, X, xs, dW, m, c, i, j, N, C, M, cg, mg, g, scale, keep);
            }
        }
    }
}

#endif
