"""QLinearConv (ONNX): the int8 convolution of the frozen layers, 1-D and 2-D, grouped and
depthwise, per-tensor or per-output-channel weight scale and zero point, optional int32 bias.
Its gradient (for a trainable bias or the layers before it) goes through the real weights, one
dequantized at a time."""
from math import prod

from ..ir import Node
from . import _qlinear, _window, attr, conv, register, register_train_op
from .mask import masked

X, X_SCALE, X_ZP, W, W_SCALE, W_ZP, Y_SCALE, Y_ZP, BIAS = range(9)


def check(node, graph):
    bias = node.inputs[BIAS] if _qlinear.present(node, BIAS) else ""
    conv.check(Node(node.op, [node.inputs[X], node.inputs[W], bias], node.outputs, node.attrs, node.name), graph)
    _qlinear.check_tensors(node, graph, data=(X, W), scales=(X_SCALE, W_SCALE, Y_SCALE),
                           zero_points=(X_ZP, W_ZP, Y_ZP), per_axis=(W_SCALE, W_ZP))
    _qlinear.check_per_axis(node, graph, (W_SCALE, W_ZP), graph.shape(node.inputs[W])[0], "output channels")
    _qlinear.check_sums(node, graph, prod(graph.shape(node.inputs[W])[1:]), BIAS)


def emit(node, c):
    x, w, y = node.inputs[X], node.inputs[W], node.outputs[0]
    (n, ch), m = c.shape(x)[:2], c.shape(w)[0]
    reals = _qlinear.scale(c, node, X_SCALE) * _qlinear.scale(c, node, W_SCALE) / _qlinear.scale(c, node, Y_SCALE)
    rq = _qlinear.requant_c(c, node, reals, _qlinear.zero_point(c, node, Y_ZP))
    bias = c.ptr(node.inputs[BIAS]) if _qlinear.present(node, BIAS) else "NULL"
    win = _window.window(node, c.shape(x), c.shape(w)[2:])
    return (f"mt_conv_s8({c.ptr(x)}, {_qlinear.zero_point(c, node, X_ZP)}, {c.ptr(w)}, "
            f"{_qlinear.zero_points(c, node, W_ZP, m)}, {bias}, {c.ptr(y)}, {n}, {ch}, {m}, {attr(node, 'group', 1)}, "
            f"{win.c()}, {rq});")


def grad(node, g):
    """Of the masked dY (a gradient passes where the int8 output is not at a bound): dX through
    the real weights, the bias gradient as the float Conv's (first: dX may then overwrite dY), or
    for integers that train (--update int8) the QAS gradients of the bias and, after dX, the weight
    (ops/qas.py)."""
    dz = masked(g, node.outputs[0], "QuantizedMask")
    if g.needs(BIAS):
        qas = g.integer_param(node.inputs[BIAS])
        g.give(BIAS, g.op("QasGradB", [dz, node.inputs[X_SCALE], node.inputs[W_SCALE]], like=node.inputs[BIAS])
               if qas else g.op("ConvGradB", [dz], like=node.inputs[BIAS]))
    if g.needs(X):
        g.give(X, g.op("QLinearConvGradX", [dz, *node.inputs[W:W_ZP + 1]], like=node.inputs[X], attrs=node.attrs))
    if g.needs(W):  # after dX, which reads the weights: plain SGD then updates them in this kernel
        g.give(W, g.op("QLinearConvGradW", [dz, *node.inputs[X:X_ZP + 1], node.inputs[W_SCALE]], like=node.inputs[W],
                       attrs=node.attrs))


# What the in-place dX kernels buffer on the stack (backward_s8.h): a pixel's output channels
# (MT_POINTWISE_MAX), a depthwise plane (MT_PLANE_MAX).
POINTWISE_MAX, PLANE_MAX = 256, 512


def _pointwise(node, x_shape, w_shape) -> bool:
    """A 1x1, stride-1, unpadded, ungrouped convolution with few enough output channels for
    mt_pointwise_grad_x_s8w."""
    win = _window.window(node, x_shape, w_shape[2:])
    return attr(node, "group", 1) == 1 and w_shape[0] <= POINTWISE_MAX and \
        set(win.kernel + win.strides) == {1} and not any(win.begin + win.end)


def _depthwise(node, x_shape, w_shape) -> bool:
    """One filter per channel, output planes as large as the input's, small enough for
    mt_depthwise_grad_x_s8w."""
    win = _window.window(node, x_shape, w_shape[2:])
    return attr(node, "group", 1) == x_shape[1] == w_shape[0] and win.out == win.size and prod(win.size) <= PLANE_MAX


def grad_x_in_place(node, graph) -> bool:
    """dX may overwrite dY: pointwise with as many input as output channels, or depthwise."""
    x, w = graph.shape(node.outputs[0]), graph.shape(node.inputs[1])
    return _depthwise(node, x, w) or _pointwise(node, x, w) and graph.shape(node.inputs[0]) == x


def emit_grad_x(node, c):
    (dz, w, _, _), dx = node.inputs, node.outputs[0]
    (n, ch), m = c.shape(dx)[:2], c.shape(w)[0]
    weights = f"{c.ptr(w)}, {_qlinear.zero_points(c, node, 3, m)}, {_qlinear.scales(c, node, 2, m)}"
    if _pointwise(node, c.shape(dx), c.shape(w)):
        return f"mt_pointwise_grad_x_s8w({c.ptr(dz)}, {weights}, {c.ptr(dx)}, {n}, {ch}, {m}, {prod(c.shape(dx)[2:])});"
    win = _window.window(node, c.shape(dx), c.shape(w)[2:])
    if _depthwise(node, c.shape(dx), c.shape(w)):
        return f"mt_depthwise_grad_x_s8w({c.ptr(dz)}, {weights}, {c.ptr(dx)}, {n}, {ch}, {win.c()});"
    return f"mt_conv_grad_x_s8w({c.ptr(dz)}, {weights}, {c.ptr(dx)}, {n}, {ch}, {m}, {attr(node, 'group', 1)}, {win.c()});"


register("QLinearConv", int8=True, kernel="conv_s8.h", emit=emit, grad=grad, diff_inputs=(X, W, BIAS), check=check)
register_train_op("QLinearConvGradX", int8=True, kernel="backward_s8.h", emit=emit_grad_x, inplace=grad_x_in_place)
