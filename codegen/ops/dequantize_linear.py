"""DequantizeLinear on activations: int8 -> float. The gradient of a quantized tensor is taken
with respect to its real value, scale * (q - zero_point), which is this op's output: it passes
unchanged."""
from . import register
from ._qdq import check_activation, scale_zp


def emit(node, c):
    q, y = node.inputs[0], node.outputs[0]
    return f"mt_dequantize({c.ptr(q)}, {c.ptr(y)}, {c.size(y)}, {scale_zp(c, *node.inputs[1:3])});"


def grad(node, g):
    g.give(0, g.dy())


register("DequantizeLinear", int8=True, kernel="qdq.h", emit=emit, grad=grad, check=check_activation)
