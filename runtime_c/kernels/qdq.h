/* QuantizeLinear / DequantizeLinear on activations: the boundary between float and int8 parts of
 * a quantized model. Per-tensor scale and int8 zero point (uint8 models are shifted to int8 at
 * compile time). x, y, dy, dx are (n). */
#ifndef MT_QDQ_H
#define MT_QDQ_H
#include "../mt_common.h"

/* x / scale rounded half to even, plus the zero point: as the ONNX spec defines it. */
static inline float mt_quantized_level(float x, float scale, int32_t zp)
{
    return rintf(x / scale) + (float)zp;
}

/* y = saturate(round(x / scale) + zp); NaN saturates to -128 (no undefined conversion). */
static inline void mt_quantize(const float *x, int8_t *y, int n, float scale, int32_t zp)
{
    int i;
    for (i = 0; i < n; ++i) {
        float q = mt_quantized_level(x[i], scale, zp);
        y[i] = (int8_t)(q >= 127.0f ? 127 : q >= -128.0f ? (int)q : -128);
    }
}

/* Straight-through estimator (as PyTorch's fake quantization): dx = dy where round(x / scale) + zp
 * lies within [-128, 127], 0 where the quantizer saturates. */
static inline void mt_quantize_grad(const float *dy, const float *x, float *dx, int n, float scale, int32_t zp)
{
    int i;
    for (i = 0; i < n; ++i) {
        float q = mt_quantized_level(x[i], scale, zp);
        dx[i] = q >= -128.0f && q <= 127.0f ? dy[i] : 0.0f;
    }
}

/* y = (q - zp) * scale. */
static inline void mt_dequantize(const int8_t *q, float *y, int n, float scale, int32_t zp)
{
    int i;
    for (i = 0; i < n; ++i) y[i] = (float)(q[i] - zp) * scale;
}

#endif
