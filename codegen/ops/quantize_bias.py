"""QuantizeBias: a trainable float bias of an int8 layer, turned into the int32 bias the layer's
kernel adds (at scale input scale x weight scale, per channel) at every step, so the update of
the float bias takes effect at once. Its gradient passes straight through (the rounding is
treated as identity, as in fake quantization)."""
from . import register_train_op


def emit(node, c):
    b, scale = node.inputs
    return f"mt_quantize_bias({c.ptr(b)}, {c.ptr(scale)}, {c.ptr(node.outputs[0])}, {c.size(b)});"


def grad(node, g):
    g.give(0, g.dy())


register_train_op("QuantizeBias", kernel="backward_s8.h", emit=emit, grad=grad)
