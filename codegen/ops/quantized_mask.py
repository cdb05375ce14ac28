"""The 1-bit masks of int8 outputs: a gradient passes only where the output is not at an int8
bound (there its quantizer saturated or a folded ReLU/Clip cut). The mask is computed in the
forward pass (GradContext.save), so the backward keeps 1 bit per element, not the activation."""
from . import register_train_op


def masked(g, y: str) -> str:
    """d loss / d (the real value before quantization) of int8 output y, given g.dy() for y."""
    return g.op("MaskedGrad", [g.dy(), g.save("QuantizedMask", [y])], like=y)


def emit_mask(node, c):
    return f"mt_mask_s8({c.ptr(node.inputs[0])}, {c.ptr(node.outputs[0])}, {c.size(node.inputs[0])});"


def emit_masked(node, c):
    dy, mask = node.inputs
    return f"mt_masked({c.ptr(dy)}, {c.ptr(mask)}, {c.ptr(node.outputs[0])}, {c.size(dy)});"


register_train_op("QuantizedMask", kernel="backward_s8.h", emit=emit_mask)
register_train_op("MaskedGrad", kernel="backward_s8.h", emit=emit_masked, inplace=True)
