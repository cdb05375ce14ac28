"""QLinearAdd (com.microsoft): int8 sum of the frozen layers with numpy broadcasting,
C = (A_scale (A - A_zp) + B_scale (B - B_zp)) / C_scale + C_zp, rounded once (the two
multipliers share a shift: codegen/requant.py). The gradient: the masked dY to both inputs."""
import numpy as np

from .. import requant
from . import _broadcast, _qlinear, register
from .mask import masked
from .sum_to import reduce_to

A, A_SCALE, A_ZP, B, B_SCALE, B_ZP, Y_SCALE, Y_ZP = range(8)


def check(node, graph):
    _qlinear.check_tensors(node, graph, data=(A, B), scales=(A_SCALE, B_SCALE, Y_SCALE),
                           zero_points=(A_ZP, B_ZP, Y_ZP))
    _broadcast.check_rank(node, graph)
    for slot, what in ((A, "A"), (B, "B")):
        _broadcast.check_broadcast(node, graph, slot, what)


def emit(node, c):
    a, b, y = node.inputs[A], node.inputs[B], node.outputs[0]
    s_y = _qlinear.scale(c, node, Y_SCALE)[0]
    reals = [_qlinear.scale(c, node, slot)[0] / s_y for slot in (A_SCALE, B_SCALE)]
    (ma, mb), shift = requant.shared(reals, _qlinear.where(node))
    zp = [_qlinear.zero_point(c, node, slot) for slot in (A_ZP, B_ZP, Y_ZP)]
    q = f"(mt_add_requant){{{zp[0]}, {ma}, {zp[1]}, {mb}, {zp[2]}, {shift}}}"
    out = c.shape(y)
    if c.shape(a) == c.shape(b) == out:
        return f"mt_add_s8({c.ptr(a)}, {c.ptr(b)}, {c.ptr(y)}, 0, NULL, NULL, NULL, {c.size(y)}, {q});"
    strides = [c.ints(_broadcast.strides_over(c.shape(t), out)) for t in (a, b)]
    return (f"mt_add_s8({c.ptr(a)}, {c.ptr(b)}, {c.ptr(y)}, {len(out)}, {c.ints(out)}, {strides[0]}, {strides[1]}, "
            f"{c.size(y)}, {q});")


def grad(node, g):
    """The masked dY to both inputs (reduced where they were broadcast)."""
    dz = masked(g, node.outputs[0], "QuantizedMask")
    for slot in (A, B):
        if g.needs(slot):
            g.give(slot, reduce_to(g, dz, node.inputs[slot]))


def shape(node, shapes, dtypes):
    return np.broadcast_shapes(shapes[A], shapes[B]), dtypes[Y_ZP] if len(dtypes) > Y_ZP and dtypes[Y_ZP] else dtypes[A]

register("QLinearAdd", int8=True, kernel="eltwise_s8.h", emit=emit, grad=grad, diff_inputs=(A, B), check=check,
         shape=shape, domain="com.microsoft", inplace=True)
