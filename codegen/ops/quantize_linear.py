"""QuantizeLinear on activations: float -> int8 (per-tensor scale and zero point). Its gradient is
the straight-through estimator of fake quantization: dy passes where the int8 output is not at a
bound (a 1-bit mask, as for the int8 layers)."""
from . import register
from ._qdq import check_activation, scale_zp
from .mask import masked


def emit(node, c):
    x, y = node.inputs[0], node.outputs[0]
    return f"mt_quantize({c.ptr(x)}, {c.ptr(y)}, {c.size(y)}, {scale_zp(c, *node.inputs[1:3])});"


def grad(node, g):
    g.give(0, masked(g, node.outputs[0], "QuantizedMask"))


register("QuantizeLinear", kernel="qdq.h", emit=emit, grad=grad, check=check_activation)
