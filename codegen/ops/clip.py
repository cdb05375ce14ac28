"""Clip: y = min(max(x, min), max); min and max are optional constant scalar inputs (since opset
11), passed to the kernel by pointer. ReLU6 is Clip(0, 6). The gradient passes where
min < x < max, strictly, as PyTorch's hardtanh/relu6 (torch.clamp also passes at x == min or max)."""
from . import register, register_train_op
from ._layout import optional_ptr, scalar
from .mask import masked


def check(node, graph):
    scalar(node, graph, 1, "min")
    scalar(node, graph, 2, "max")


def emit(node, c):
    x, y = node.inputs[0], node.outputs[0]
    lo, hi = optional_ptr(c, node, 1), optional_ptr(c, node, 2)
    return f"mt_clip({c.ptr(x)}, {c.ptr(y)}, {c.size(y)}, {lo}, {hi});"


def grad(node, g):
    """ClipGrad(dy, y, min, max): the bounds ride along as the same constant inputs. The output
    y = clip(x) lies strictly inside (min, max) exactly where x does, so the input can die here;
    when the backward does not keep y anyway, a 1-bit mask of it (InsideMask) lets y die too."""
    y = node.outputs[0]
    if g.kept(y):
        g.give(0, g.op("ClipGrad", [g.dy(), y, *node.inputs[1:]], like=node.inputs[0]))
    else:
        g.give(0, masked(g, y, "InsideMask", *node.inputs[1:]))


def emit_grad(node, c):
    dy, y = node.inputs[:2]
    dx = node.outputs[0]
    lo, hi = optional_ptr(c, node, 2), optional_ptr(c, node, 3)
    return f"mt_clip_grad({c.ptr(dy)}, {c.ptr(y)}, {c.ptr(dx)}, {c.size(dx)}, {lo}, {hi});"


# Elementwise kernels: the output may overwrite a dying input (inplace).
register("Clip", kernel="unary.h", emit=emit, grad=grad, check=check, inplace=True)
register_train_op("ClipGrad", kernel="unary.h", emit=emit_grad, inplace=True)
