"""Conv (1-D and 2-D, grouped incl. depthwise, optional bias) and its gradients: dX is the
transposed convolution of dY, dW correlates dY with X, dB sums dY per output channel."""
import math

from . import _window, attr, invalid, register, register_train_op
from ._layout import optional_ptr


def _has_bias(node) -> bool:
    return len(node.inputs) > 2 and bool(node.inputs[2])


def _sizes(node, c, x, w) -> str:
    """The kernels' N, C, M, G and window arguments."""
    (n, ch), m = c.shape(x)[:2], c.shape(w)[0]
    win = _window.window(node, c.shape(x), c.shape(w)[2:])
    return f"{n}, {ch}, {m}, {attr(node, 'group', 1)}, {_as_rows(win).c()}"


def _as_rows(win: _window.Window) -> _window.Window:
    """A 1x1 window with stride 1 and no padding reads each plane as one long row, which fills the
    kernels' vectors and loops better than h rows of w (same sums, same order)."""
    if set(win.kernel + win.strides) == {1} and not any(win.begin + win.end):
        n = math.prod(win.size)
        return _window.Window((n,), (n,), (1,), (1,), (1,), (0,), (0,))
    return win


def check(node, graph):
    x, w = (graph.shape(i) for i in node.inputs[:2])
    group = attr(node, "group", 1)
    if group < 1 or w[0] % group or w[1] * group != x[1]:
        raise invalid(node, f"group {group} with input {list(x)} and weight {list(w)} (input channels must be "
                            "group x the weight's dim 1, and its output channels a multiple of group)")
    if attr(node, "kernel_shape") is not None and list(attr(node, "kernel_shape")) != list(w[2:]):
        raise invalid(node, f"kernel_shape {list(attr(node, 'kernel_shape'))} unlike the weight {list(w)}")
    if _has_bias(node) and tuple(graph.shape(node.inputs[2])) != (w[0],):
        raise invalid(node, f"bias '{node.inputs[2]}' of shape {list(graph.shape(node.inputs[2]))} for {w[0]} "
                            "output channels")
    _window.check(node, graph, w[2:])


def emit(node, c):
    x, w = node.inputs[:2]
    b = optional_ptr(c, node, 2)
    return f"mt_conv({c.ptr(x)}, {c.ptr(w)}, {b}, {c.ptr(node.outputs[0])}, {_sizes(node, c, x, w)});"


def grad(node, g):
    x, w = node.inputs[:2]
    dy = g.dy()
    if g.needs(0):
        g.give(0, g.op("ConvGradX", [dy, w], like=x, attrs=node.attrs))
    if g.needs(1):
        g.give(1, g.op("ConvGradW", [dy, x], like=w, attrs=node.attrs))
    if g.needs(2):
        g.give(2, g.op("ConvGradB", [dy], like=node.inputs[2]))


def emit_grad_x(node, c):
    (dy, w), dx = node.inputs, node.outputs[0]
    return f"mt_conv_grad_x({c.ptr(dy)}, {c.ptr(w)}, {c.ptr(dx)}, {_sizes(node, c, dx, w)});"


def emit_grad_w(node, c, scale="1.0f", keep="0.0f"):
    """dW = keep * dW + scale * (dY correlated with X): also the fused SGD update of W."""
    (dy, x), dw = node.inputs, node.outputs[0]
    return f"mt_conv_grad_w({c.ptr(dy)}, {c.ptr(x)}, {c.ptr(dw)}, {_sizes(node, c, x, dw)}, {scale}, {keep});"


def emit_grad_b(node, c, scale="1.0f", keep="0.0f"):
    """dB = keep * dB + scale * (dY summed per channel): also the fused SGD update of B."""
    dy, db = node.inputs[0], node.outputs[0]
    n, m = c.shape(dy)[:2]
    return f"mt_channel_sum({c.ptr(dy)}, {c.ptr(db)}, {n}, {m}, {c.size(dy) // (n * m)}, {scale}, {keep});"


register("Conv", kernel="conv.h", emit=emit, grad=grad, diff_inputs=(0, 1, 2), bias_inputs=(2,), check=check)
register_train_op("ConvGradX", kernel="conv.h", emit=emit_grad_x)
register_train_op("ConvGradW", kernel="conv.h", emit=emit_grad_w, emit_update=emit_grad_w)
register_train_op("ConvGradB", kernel="channel_sum.h", emit=emit_grad_b, emit_update=emit_grad_b)
