"""QLinearGlobalAveragePool (com.microsoft): each (n, c) plane of int8 values to its mean, the
int32 sum of (x - x_zp) requantized with real x_scale / (y_scale * plane size). NCHW only
(channels_last refused). The gradient: the float op's, of the masked dY."""
from math import prod

from .. import requant
from . import _qlinear, attr, invalid, refuse, register
from .mask import masked

X, X_SCALE, X_ZP, Y_SCALE, Y_ZP = range(5)  # also QLinearAveragePool's inputs


def check_inputs(node, graph):
    if attr(node, "channels_last", 0):
        raise refuse(node, "channels_last=1 (NHWC)")
    _qlinear.check_tensors(node, graph, data=(X,), scales=(X_SCALE, Y_SCALE), zero_points=(X_ZP, Y_ZP))


def average_requant(c, node, counts) -> str:
    """The mt_requant of the means of `counts` values, one multiplier per count."""
    pair = requant.averages(_qlinear.scale(c, node, X_SCALE)[0], _qlinear.scale(c, node, Y_SCALE)[0], counts,
                            _qlinear.where(node))
    return _qlinear.requant_literal(c, *pair, _qlinear.zero_point(c, node, Y_ZP))


def check(node, graph):
    x, y = graph.shape(node.inputs[X]), graph.shape(node.outputs[0])
    if len(x) < 3:
        raise refuse(node, "global pooling of an input without spatial dimensions")
    if tuple(y) != (*x[:2], *(1,) * (len(x) - 2)):
        raise invalid(node, f"output shape {list(y)} for input {list(x)}")
    check_inputs(node, graph)


def emit(node, c):
    x, y = node.inputs[X], node.outputs[0]
    shape = c.shape(x)
    count = prod(shape[2:])
    return (f"mt_global_avg_pool_s8({c.ptr(x)}, {_qlinear.zero_point(c, node, X_ZP)}, {c.ptr(y)}, "
            f"{shape[0] * shape[1]}, {count}, {average_requant(c, node, [count])});")


def grad(node, g):
    """The masked dY spread over each plane, as the float op's."""
    x = node.inputs[X]
    g.give(X, g.op("GlobalAveragePoolGrad", [masked(g, node.outputs[0], "QuantizedMask")], like=x))


def shape(node, shapes, dtypes):
    x = shapes[X]
    return (*x[:2], *(1,) * (len(x) - 2)), dtypes[X]

register("QLinearGlobalAveragePool", int8=True, kernel="pool_s8.h", emit=emit, grad=grad, diff_inputs=(X,), check=check,
         shape=shape, domain="com.microsoft")
