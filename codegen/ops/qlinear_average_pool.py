"""QLinearAveragePool (com.microsoft): int8 window means (1-D and 2-D, count_include_pad,
ceil_mode), each window's int32 sum of (x - x_zp) requantized with the multiplier of its tap
count. NCHW only. The gradient: the float op's, of the masked dY."""
from math import prod

from . import _qlinear, _window, attr, register
from .mask import masked
from .qlinear_global_average_pool import X, X_ZP, average_requant, check_inputs


def check(node, graph):
    check_inputs(node, graph)
    _window.check_pool(node, graph)


def emit(node, c):
    x, y = node.inputs[X], node.outputs[0]
    counts = range(1, prod(attr(node, "kernel_shape")) + 1)
    return (f"mt_avg_pool_s8({c.ptr(x)}, {_qlinear.zero_point(c, node, X_ZP)}, {c.ptr(y)}, "
            f"{_window.pool_args(node, c, x)}, {int(attr(node, 'count_include_pad', 0))}, "
            f"{average_requant(c, node, counts)});")


def grad(node, g):
    """The float AveragePool's gradient, of the masked dY."""
    attrs = {k: v for k, v in node.attrs.items() if k != "channels_last"}
    dz = masked(g, node.outputs[0], "QuantizedMask")
    g.give(X, g.op("AveragePoolGrad", [dz], like=node.inputs[X], attrs=attrs))


def shape(node, shapes, dtypes):
    x = shapes[X]
    win = _window.window(node, x, attr(node, "kernel_shape"), bool(attr(node, "ceil_mode", 0)))
    return (*x[:2], *win.out), dtypes[X]

register("QLinearAveragePool", int8=True, kernel="pool_s8.h", emit=emit, grad=grad, diff_inputs=(X,), check=check,
         shape=shape, domain="com.microsoft")
