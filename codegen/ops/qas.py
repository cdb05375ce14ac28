"""Gradients of the integers of int8 layers that train under --update int8, rescaled as
quantization-aware scaling (QAS, Lin et al. 2022) asks: in units of one integer step, so SGD on
the integers (ops/sgd.py, mt_sgd_s8/s32) moves the real weights as float SGD would. The factors
F are per output channel, from the layer's compile-time scales (runtime_c/kernels/qas.h):
QLinearConvGradW / QGemmGradW (dY, x, x scale, x zero point, w scale): sx / sw[m];
QasGradB (dY, x scale, w scale): 1 / (sx * sw[m]).
Each writes its gradient (emit), or adds it to a float target or, fused plain SGD
(TrainingGraph.fused), takes the rounded step on the integers themselves (emit_update): then no
float gradient of the weight is ever stored."""
from __future__ import annotations

import numpy as np

from . import _qlinear, _window, attr, register_train_op
from ._qlinear import BIAS_LIMIT


def factors(sx: np.ndarray, sw: np.ndarray, count: int, bias: bool) -> np.ndarray:
    """The float32 factors of each output channel (computed in float64 from the float32 scales)."""
    sx, sw = np.float64(sx.reshape(-1)[0]), np.broadcast_to(sw.astype(np.float64).reshape(-1), (count,))
    return (1.0 / (sx * sw) if bias else sx / sw).astype(np.float32)


def _factors(node, c, count: int, bias: bool) -> str:
    sx, sw = (c.value(node.inputs[s]) for s in ((1, 2) if bias else (2, 4)))
    return c.floats(factors(sx, sw, count, bias))


def _out(node, c, scale: str, keep: str) -> str:
    """The kernel's mt_qas_out: the output's buffer is the gradient, or the fused target (the
    plan roots a fused gradient at it): a float tensor, or the int8/int32 parameter itself."""
    out = node.outputs[0]
    dtype = c.tg.graph.tensors[c.plan.root(out)].dtype
    ptrs = [c.ptr(out) if dtype == kind else "NULL" for kind in ("float32", "int8", "int32")]
    return (f"(mt_qas_out){{{', '.join(ptrs)}, {scale}, {keep}, {BIAS_LIMIT}, "
            f"{c.rng if dtype != 'float32' else 'NULL'}}}")


def emit_conv_grad_w(node, c, scale="1.0f", keep="0.0f"):
    dy, x, dw = node.inputs[0], node.inputs[1], node.outputs[0]
    (n, ch), m = c.shape(x)[:2], c.shape(dw)[0]
    win = _window.window(node, c.shape(x), c.shape(dw)[2:])
    return (f"mt_qas_conv_grad_w({c.ptr(dy)}, {c.ptr(x)}, {_qlinear.zero_point(c, node, 3)}, "
            f"{_factors(node, c, m, False)}, {_out(node, c, scale, keep)}, {n}, {ch}, {m}, {attr(node, 'group', 1)}, "
            f"{win.c()});")


def emit_gemm_grad_w(node, c, scale="1.0f", keep="0.0f"):
    dy, x, dw = node.inputs[0], node.inputs[1], node.outputs[0]
    k, n = c.shape(x)[-1], c.shape(dy)[-1]
    return (f"mt_qas_gemm_grad_w({c.ptr(dy)}, {c.ptr(x)}, {_qlinear.zero_point(c, node, 3)}, "
            f"{_factors(node, c, n, False)}, {_out(node, c, scale, keep)}, {c.size(x) // k}, {k}, {n}, "
            f"{attr(node, 'transB', 0)});")


def emit_grad_b(node, c, scale="1.0f", keep="0.0f"):
    """dY (N, M, ...) of a convolution, or (R, M) of a matrix product."""
    dy = node.inputs[0]
    n, m = c.shape(dy)[:2]
    return (f"mt_qas_grad_b({c.ptr(dy)}, {_factors(node, c, m, True)}, {_out(node, c, scale, keep)}, {n}, {m}, "
            f"{c.size(dy) // (n * m)});")


register_train_op("QLinearConvGradW", kernel="qas.h", emit=emit_conv_grad_w, emit_update=emit_conv_grad_w)
register_train_op("QGemmGradW", kernel="qas.h", emit=emit_gemm_grad_w, emit_update=emit_gemm_grad_w)
register_train_op("QasGradB", kernel="qas.h", emit=emit_grad_b, emit_update=emit_grad_b)
