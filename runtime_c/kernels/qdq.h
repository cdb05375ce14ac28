/* QuantizeLinear / DequantizeLinear on activations: the boundary between float and int8 parts of
 * a quantized model. Per-tensor scale and int8 zero point (uint8 models are shifted to int8 at
 * compile time). x, y, dy, dx are (n). */
#ifndef MT_QDQ_H
#define MT_QDQ_H
#include "../mt_common.h"

/* y = saturate(round(x / scale) + zp); NaN saturates to -128 (no undefined conversion). */
static inline void mt_quantize(const float *x, int8_t *y, int n, float scale, int32_t zp)
{
    int i;
    for (i = 0; i < n; ++i) {
        float q = rintf(x[i] / scale) + (float)zp; /* round half to even, as ONNX */
        y[i] = (int8_t)(q >= 127.0f ? 127 : q >= -128.0f ? (int)q : -128);
    }
}

/* y = (q - zp) * scale. */
static inline void mt_dequantize(const int8_t *q, float *y, int n, float scale, int32_t zp)
{
    int i;
    for (i = 0; i < n; ++i) y[i] = (float)(q[i] - zp) * scale;
}

#endif
