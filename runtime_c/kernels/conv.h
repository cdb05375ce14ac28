/* Grouped 2-D convolution (1-D: H = 1) and its gradients: mt_conv, mt_conv_grad_x, mt_conv_grad_w.
 * X (N, C, h, w), W (M, C/G, kh, kw), B (M) or NULL, Y (N, M, oh, ow); output channel m reads
 * input channels of group m / (M/G). The forward and dX kernels write their output; the dW kernel
 * stores through mt_update (scale, keep), so plain SGD can be applied in place.
 * Two implementations with one interface (mt_common.h, MT_SIMD): register tiles of vectors for
 * cores with a vector unit, scalar rows for microcontrollers. */
#ifndef MT_CONV_H
#define MT_CONV_H
#include "../mt_common.h"
#if MT_SIMD
#include "conv_tiles.h"
#else
#include "conv_rows.h"
#endif
#endif
