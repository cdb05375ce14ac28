/* Recurrent layers (ONNX RNN with tanh, GRU with linear_before_reset = 1, LSTM without
 * peepholes): forward over time and backpropagation through time. Plain C99 loops: each hidden
 * unit's gate pre-activations are dot products of one row of W with x_t and one row of R with
 * h_{t-1} (the strided layouts of `layout` 1 do not fit the GEMM kernels' contiguous operands).
 *
 * `dims` (int32, codegen/ops/_recurrent.py builds it) describes the sizes and element strides:
 *   [0] gates G (1 RNN, 3 GRU, 4 LSTM)  [1] S  [2] B  [3] I  [4] H  [5] D  [6] first direction reversed
 *   [7..8]   X strides (t, b)
 *   [9..11]  Y (the hidden states h_t) and dY: (d, t, b)
 *   [12..14] cell states c_t (LSTM): (d, t, b); a t stride of 0 updates them in place (Y_c)
 *   [15..16] initial and final states (initial_h, Y_h, ...) and their gradients: (d, b)
 *   [17..19] the trace (gate values saved per step for the backward): (d, t, b); [20] K values per unit
 *   [21]     GRU's linear_before_reset is 0
 * Weights: W (D, G*H, I), R (D, G*H, H), Bias (D, 2*G*H) in ONNX gate order (GRU z, r, h; LSTM
 * i, o, f, c). Trace slots per step and unit: GRU z, r, n, R_n h + Rb_n (linear_before_reset = 0:
 * r * h); LSTM i, o, f, g, c; RNN none (the backward reads h_t from Y). */
#ifndef MT_RECURRENT_H
#define MT_RECURRENT_H
#include "../mt_common.h"
#include "unary.h"

enum { MT_REC_G, MT_REC_S, MT_REC_B, MT_REC_I, MT_REC_H, MT_REC_D, MT_REC_REV, MT_REC_X, MT_REC_HS = 9,
       MT_REC_CS = 12, MT_REC_ST = 15, MT_REC_TR = 17, MT_REC_K = 20, MT_REC_RESET_FIRST = 21 };

static inline float mt_rec_dot(const float *a, const float *b, int n)
{
    float s = 0.0f;
    int i;
    for (i = 0; i < n; ++i) s += a[i] * b[i];
    return s;
}

static inline float mt_rec_sigmoid(float x)
{
    float y;
    mt_sigmoid(&x, &y, 1);
    return y;
}

/* Time index of processing step s in direction d. */
static inline int mt_rec_time(const int32_t *dims, int d, int s)
{
    int reverse = d > 0 || dims[MT_REC_REV];
    return reverse ? dims[MT_REC_S] - 1 - s : s;
}

/* Element offset of (d, t, b) under the three strides at dims[at]. */
static inline size_t mt_rec_at(const int32_t *dims, int at, int d, int t, int b)
{
    return (size_t)d * dims[at] + (size_t)t * dims[at + 1] + (size_t)b * dims[at + 2];
}

static inline size_t mt_rec_state(const int32_t *dims, int d, int b)
{
    return (size_t)d * dims[MT_REC_ST] + (size_t)b * dims[MT_REC_ST + 1];
}

/* One unit j of one step: from its pre-activations ax (x side + Wb) and ah (h side + Rb), per
 * gate, and the previous states, the new h (returned) and c (*c); the trace slots if tr. */
static inline float mt_rec_cell(int gates, int H, int j, const float *ax, const float *ah, float hp,
                                float cp, float *c, float *tr)
{
    float z, r, n, i, o, f, g, h;
    if (gates == 1) {
        h = tanhf(ax[0] + ah[0]);
    } else if (gates == 3) {
        z = mt_rec_sigmoid(ax[0] + ah[0]);
        r = mt_rec_sigmoid(ax[1] + ah[1]);
        n = tanhf(ax[2] + r * ah[2]);
        h = (1.0f - z) * n + z * hp;
        if (tr) {
            tr[j] = z; tr[H + j] = r; tr[2 * H + j] = n; tr[3 * H + j] = ah[2];
        }
    } else {
        i = mt_rec_sigmoid(ax[0] + ah[0]);
        o = mt_rec_sigmoid(ax[1] + ah[1]);
        f = mt_rec_sigmoid(ax[2] + ah[2]);
        g = tanhf(ax[3] + ah[3]);
        *c = f * cp + i * g;
        h = o * tanhf(*c);
        if (tr) {
            tr[j] = i; tr[H + j] = o; tr[2 * H + j] = f; tr[3 * H + j] = g;
        }
    }
    return h;
}

/* A GRU step with linear_before_reset = 0: n reads (r * h_{t-1}) R_n, so every unit's r comes
 * first. rh (H floats: Y_h's place, written after the last step) holds r * h_{t-1}; h holds z
 * until each unit's h_t replaces it. */
static inline void mt_rec_gru_reset_first(int H, int I, const float *x, const float *w, const float *rw,
                                          const float *bias, const float *hp, float *h, float *rh, float *tr)
{
    int j, k;
    for (j = 0; j < H; ++j) {
        float a[2], r;
        for (k = 0; k < 2; ++k) {
            size_t row = (size_t)k * H + j;
            a[k] = mt_rec_dot(w + row * I, x, I) + (bias ? bias[row] : 0.0f) +
                   (hp ? mt_rec_dot(rw + row * H, hp, H) : 0.0f) + (bias ? bias[3 * H + row] : 0.0f);
        }
        h[j] = mt_rec_sigmoid(a[0]);
        r = mt_rec_sigmoid(a[1]);
        rh[j] = hp ? r * hp[j] : 0.0f;
        if (tr) {
            tr[j] = h[j]; tr[H + j] = r; tr[3 * H + j] = rh[j];
        }
    }
    for (j = 0; j < H; ++j) {
        size_t row = (size_t)2 * H + j;
        float z = h[j], n = tanhf(mt_rec_dot(w + row * I, x, I) + (bias ? bias[row] : 0.0f) +
                                  mt_rec_dot(rw + row * H, rh, H) + (bias ? bias[3 * H + row] : 0.0f));
        h[j] = (1.0f - z) * n + z * (hp ? hp[j] : 0.0f);
        if (tr) tr[2 * H + j] = n;
    }
}

/* Forward over all steps and directions into Y; cs: where c_t is kept (dims [12..14]); trace
 * (NULL: not kept) gets the gate values; Yh, Yc (NULL: not wanted) the final states.
 * Bias, h0, c0 may be NULL (zeros). */
static inline void mt_rec_forward(const int32_t *dims, const float *X, const float *W, const float *R,
                                  const float *Bias, const float *h0, const float *c0, float *Y, float *cs,
                                  float *trace, float *Yh, float *Yc)
{
    const int G = dims[MT_REC_G], S = dims[MT_REC_S], B = dims[MT_REC_B], I = dims[MT_REC_I],
              H = dims[MT_REC_H], D = dims[MT_REC_D];
    float ax[4], ah[4];
    int d, s, b, j, k;
    for (d = 0; d < D; ++d) {
        const float *w = W + (size_t)d * G * H * I, *rw = R + (size_t)d * G * H * H;
        const float *bias = Bias ? Bias + (size_t)d * 2 * G * H : NULL;
        for (s = 0; s < S; ++s) {
            int t = mt_rec_time(dims, d, s), tp = mt_rec_time(dims, d, s - 1);
            for (b = 0; b < B; ++b) {
                const float *x = X + (size_t)t * dims[MT_REC_X] + (size_t)b * dims[MT_REC_X + 1];
                const float *hp = s ? Y + mt_rec_at(dims, MT_REC_HS, d, tp, b)
                                    : (h0 ? h0 + mt_rec_state(dims, d, b) : NULL);
                const float *cp = !cs ? NULL : s ? cs + mt_rec_at(dims, MT_REC_CS, d, tp, b)
                                                 : (c0 ? c0 + mt_rec_state(dims, d, b) : NULL);
                float *h = Y + mt_rec_at(dims, MT_REC_HS, d, t, b);
                float *c = cs ? cs + mt_rec_at(dims, MT_REC_CS, d, t, b) : NULL;
                float *tr = trace ? trace + mt_rec_at(dims, MT_REC_TR, d, t, b) : NULL;
                if (dims[MT_REC_RESET_FIRST]) {
                    mt_rec_gru_reset_first(H, I, x, w, rw, bias, hp, h, Yh + mt_rec_state(dims, d, b), tr);
                    continue;
                }
                for (j = 0; j < H; ++j) {
                    float cj = 0.0f;
                    for (k = 0; k < G; ++k) {
                        size_t row = (size_t)k * H + j;
                        ax[k] = mt_rec_dot(w + row * I, x, I) + (bias ? bias[row] : 0.0f);
                        ah[k] = (hp ? mt_rec_dot(rw + row * H, hp, H) : 0.0f) + (bias ? bias[G * H + row] : 0.0f);
                    }
                    h[j] = mt_rec_cell(G, H, j, ax, ah, hp ? hp[j] : 0.0f, cp ? cp[j] : 0.0f, &cj, tr);
                    if (c) c[j] = cj;
                }
            }
        }
        for (b = 0; b < B; ++b) {
            int t = mt_rec_time(dims, d, S - 1);
            for (j = 0; j < H; ++j) {
                if (Yh) Yh[mt_rec_state(dims, d, b) + j] = Y[mt_rec_at(dims, MT_REC_HS, d, t, b) + j];
                if (Yc) Yc[mt_rec_state(dims, d, b) + j] = cs[mt_rec_at(dims, MT_REC_CS, d, t, b) + j];
            }
        }
    }
}

/* One unit's pre-activation gradients from dh (and *dc, the gradient reaching c_t from later
 * steps, replaced by the one reaching c_{t-1}): dax[k * H] (x side), dah[k * H] (h side). tr: the
 * unit's trace slots (RNN: its h_t).
 * Returns the part of dh_{t-1} that does not go through R (GRU's z * dh). */
static inline float mt_rec_cell_grad(int gates, int H, const float *tr, float dh, float hp, float cp,
                                     float *dc, float *dax, float *dah)
{
    int k;
    if (gates == 1) {
        float h = tr[0];
        dax[0] = dh * (1.0f - h * h);
        dah[0] = dax[0];
        return 0.0f;
    }
    if (gates == 3) {
        float z = tr[0], r = tr[H], n = tr[2 * H], hr = tr[3 * H];
        float dn = dh * (1.0f - z) * (1.0f - n * n);
        dax[0] = dh * (hp - n) * z * (1.0f - z);
        dax[H] = dn * hr * r * (1.0f - r);
        dax[2 * H] = dn;
        dah[0] = dax[0];
        dah[H] = dax[H];
        dah[2 * H] = dn * r;
        return dh * z;
    }
    {
        float i = tr[0], o = tr[H], f = tr[2 * H], g = tr[3 * H], tc = tanhf(tr[4 * H]);
        float dct = *dc + dh * o * (1.0f - tc * tc);
        dax[0] = dct * g * i * (1.0f - i);
        dax[H] = dh * tc * o * (1.0f - o);
        dax[2 * H] = dct * cp * f * (1.0f - f);
        dax[3 * H] = dct * i * (1.0f - g * g);
        *dc = dct * f;
        for (k = 0; k < 4; ++k) dah[k * H] = dax[k * H];
        return 0.0f;
    }
}

/* The gradient of GRU's r with linear_before_reset = 0 (dax, dah hold the others): r acts through
 * r * h_{t-1} inside n, so it needs every unit's dn first: d(rh) = R_n^T dn, dr = d(rh) h_{t-1},
 * dh_{t-1} += d(rh) r. tr: the step's trace; rn: R_n. */
static inline void mt_rec_reset_first_grad(int H, const float *tr, const float *hp, const float *rn, float *dax,
                                           float *dah, float *dhb)
{
    int j, k;
    for (k = 0; k < H; ++k) {
        float drh = 0.0f, r = tr[H + k];
        for (j = 0; j < H; ++j) drh += dax[2 * H + j] * rn[(size_t)j * H + k];
        dax[H + k] = dah[H + k] = drh * (hp ? hp[k] : 0.0f) * r * (1.0f - r);
        dhb[k] += drh * r;
    }
    for (j = 0; j < H; ++j) dah[2 * H + j] = dax[2 * H + j];
}

/* Backpropagation through time from dY, dYh, dYc (each NULL: no gradient), reading h_t from Y
 * and the gates and c_t from the trace. Outputs, each NULL
 * when not wanted: dX, dW, dR, dBias (set, not accumulated). dh, dc (D*B*H in the layout of the
 * states, always given; dc for LSTM) end as the gradients of initial_h, initial_c. scratch: 2*G*H. */
static inline void mt_rec_backward(const int32_t *dims, const float *X, const float *W, const float *R,
                                   const float *h0, const float *c0, const float *Y, const float *trace,
                                   const float *dY,
                                   const float *dYh, const float *dYc, float *dX, float *dW, float *dR,
                                   float *dBias, float *dh, float *dc, float *scratch)
{
    const int G = dims[MT_REC_G], S = dims[MT_REC_S], B = dims[MT_REC_B], I = dims[MT_REC_I],
              H = dims[MT_REC_H], D = dims[MT_REC_D], K = dims[MT_REC_K];
    float *dax = scratch, *dah = scratch + G * H;
    const int reset_first = dims[MT_REC_RESET_FIRST], through_h = reset_first ? 2 * H : G * H;
    int d, s, b, j, k, i;
    if (dX) {
        for (s = 0; s < S; ++s)
            for (b = 0; b < B; ++b)
                memset(dX + (size_t)s * dims[MT_REC_X] + (size_t)b * dims[MT_REC_X + 1], 0, sizeof(float) * I);
    }
    if (dW) memset(dW, 0, sizeof(float) * D * G * H * I);
    if (dR) memset(dR, 0, sizeof(float) * D * G * H * H);
    if (dBias) memset(dBias, 0, sizeof(float) * D * 2 * G * H);
    for (d = 0; d < D; ++d) {
        const float *w = W + (size_t)d * G * H * I, *rw = R + (size_t)d * G * H * H;
        for (b = 0; b < B; ++b) {
            size_t at = mt_rec_state(dims, d, b);
            for (j = 0; j < H; ++j) {
                dh[at + j] = dYh ? dYh[at + j] : 0.0f;
                if (dc) dc[at + j] = dYc ? dYc[at + j] : 0.0f;
            }
        }
        for (s = S - 1; s >= 0; --s) {
            int t = mt_rec_time(dims, d, s), tp = mt_rec_time(dims, d, s - 1);
            for (b = 0; b < B; ++b) {
                const float *x = X + (size_t)t * dims[MT_REC_X] + (size_t)b * dims[MT_REC_X + 1];
                const float *tr = G == 1 ? Y + mt_rec_at(dims, MT_REC_HS, d, t, b)
                                         : trace + mt_rec_at(dims, MT_REC_TR, d, t, b);
                const float *hp = s ? Y + mt_rec_at(dims, MT_REC_HS, d, tp, b)
                                    : (h0 ? h0 + mt_rec_state(dims, d, b) : NULL);
                const float *cp = G != 4 ? NULL
                                  : s ? trace + mt_rec_at(dims, MT_REC_TR, d, tp, b) + (size_t)(K - 1) * H
                                      : (c0 ? c0 + mt_rec_state(dims, d, b) : NULL);
                const float *dy = dY ? dY + mt_rec_at(dims, MT_REC_HS, d, t, b) : NULL;
                float *dhb = dh + mt_rec_state(dims, d, b), *dcb = dc ? dc + mt_rec_state(dims, d, b) : NULL;
                float *dbias = dBias ? dBias + (size_t)d * 2 * G * H : NULL;
                for (j = 0; j < H; ++j) {
                    float g = dhb[j] + (dy ? dy[j] : 0.0f), dcj = dcb ? dcb[j] : 0.0f;
                    dhb[j] = mt_rec_cell_grad(G, H, tr + j, g, hp ? hp[j] : 0.0f, cp ? cp[j] : 0.0f, &dcj,
                                              dax + j, dah + j);
                    if (dcb) dcb[j] = dcj;
                }
                if (reset_first) mt_rec_reset_first_grad(H, tr, hp, rw + (size_t)2 * H * H, dax, dah, dhb);
                for (k = 0; k < G * H; ++k) {
                    const float *src = k < through_h ? hp : tr + 3 * H;  /* what R's row k multiplied */
                    if (dW) for (i = 0; i < I; ++i) dW[((size_t)d * G * H + k) * I + i] += dax[k] * x[i];
                    if (dR && src) for (i = 0; i < H; ++i) dR[((size_t)d * G * H + k) * H + i] += dah[k] * src[i];
                    if (dbias) {
                        dbias[k] += dax[k];
                        dbias[G * H + k] += dah[k];
                    }
                }
                if (dX) {
                    float *dx = dX + (size_t)t * dims[MT_REC_X] + (size_t)b * dims[MT_REC_X + 1];
                    for (i = 0; i < I; ++i) {
                        float sum = 0.0f;
                        for (k = 0; k < G * H; ++k) sum += dax[k] * w[(size_t)k * I + i];
                        dx[i] += sum;
                    }
                }
                for (i = 0; i < H; ++i) {
                    float sum = dhb[i];
                    for (k = 0; k < through_h; ++k) sum += dah[k] * rw[(size_t)k * H + i];
                    dhb[i] = sum;
                }
            }
        }
    }
}

/* out = keep * out + scale * src (n): one part of the packed gradient. */
static inline void mt_rec_part(const float *src, float *out, int n, float scale, float keep)
{
    int i;
    for (i = 0; i < n; ++i) out[i] = keep * out[i] + scale * src[i];
}

#endif
