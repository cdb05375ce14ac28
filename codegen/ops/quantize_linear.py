"""QuantizeLinear on activations: float -> int8 (per-tensor scale and zero point). Its gradient is
the straight-through estimator of fake quantization: dy passes where the quantizer does not
saturate."""
from . import register, register_train_op
from ._qdq import check_activation, scale_zp


def emit(node, c):
    x, y = node.inputs[0], node.outputs[0]
    return f"mt_quantize({c.ptr(x)}, {c.ptr(y)}, {c.size(y)}, {scale_zp(c, *node.inputs[1:3])});"


def grad(node, g):
    x = node.inputs[0]
    g.give(0, g.op("QuantizeLinearGrad", [g.dy(), x, *node.inputs[1:3]], like=x))


def emit_grad(node, c):
    dy, x = node.inputs[:2]
    return f"mt_quantize_grad({c.ptr(dy)}, {c.ptr(x)}, {c.ptr(node.outputs[0])}, {c.size(x)}, {scale_zp(c, *node.inputs[2:4])});"


register("QuantizeLinear", kernel="qdq.h", emit=emit, grad=grad, check=check_activation)
register_train_op("QuantizeLinearGrad", kernel="qdq.h", emit=emit_grad, inplace=True)
