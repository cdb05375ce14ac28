"""Accumulate: sums a parameter's gradient over the micro-batches of one training step (scaled
by 1/K, so the update sees the gradient of the mean loss over the whole batch). Inputs (sum, g), like the optimizer ops (target, gradient)."""
from . import register_train_op


def emit(node, c):
    acc, g = node.inputs
    return (f"mt_accumulate({c.ptr(acc)}, {c.ptr(g)}, {c.size(g)}, {c.f(node.attrs['scale'])}, "
            f"{c.micro} == 0);")


def emit_fused(node, c):
    """The gradient's producer adds scale * g into the sum itself (overwriting it in the first
    micro-batch), so the micro-batch gradient needs no buffer."""
    return c.f(node.attrs["scale"]), f"({c.micro} == 0 ? 0.0f : 1.0f)", None


register_train_op("Accumulate", kernel="accumulate.h", emit=emit, fuse_into=lambda node: node.inputs[0],
                  emit_fused=emit_fused)
