/* ONNX Attention with 4-D Q (bh, s, d), K (bh, l, d), V (bh, l, dv), bh = batch x heads, no mask:
 * p = softmax(scale * q k^T) over the l keys, y = p v. p (bh, s, l) is kept for the backward. */
#ifndef MT_ATTENTION_H
#define MT_ATTENTION_H
#include "matmul.h"
#include "softmax.h"

static inline void mt_attention(const float *q, const float *k, const float *v, float *y, float *p, int bh,
                                int s, int l, int d, int dv, float scale)
{
    mt_matmul(bh, s, l, d, q, s * d, 0, k, l * d, 1, p, s * l, scale, 0.0f);
    mt_softmax(p, p, bh * s, l, 1);
    mt_matmul(bh, s, dv, l, p, s * l, 0, v, l * dv, 0, y, s * dv, 1.0f, 0.0f);
}

#endif
