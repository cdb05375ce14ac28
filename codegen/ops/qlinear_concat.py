"""QLinearConcat (com.microsoft): concatenation of int8 tensors along `axis`, each input
requantized from its own scale and zero point to the output's (real = s_in / s_y). Inputs:
Y_scale, Y_zero_point, then (tensor, scale, zero point) per input. The gradient: Concat's, of
the masked dY."""
from itertools import accumulate
from math import prod

from . import _qlinear, invalid, refuse, register
from ..ir import Node
from .concat import MAX_INPUTS, axis_of, offsets
from .mask import masked

Y_SCALE, Y_ZP = 0, 1


def check(node, graph):
    if len(node.inputs) < 5 or (len(node.inputs) - 2) % 3:
        raise invalid(node, f"{len(node.inputs)} inputs (Y_scale, Y_zero_point, then triples of tensor, scale, "
                            "zero point)")
    if len(node.inputs[2::3]) > MAX_INPUTS:
        raise refuse(node, f"more than {MAX_INPUTS} inputs")
    slots = range(2, len(node.inputs))
    _qlinear.check_tensors(node, graph, data=slots[::3], scales=(Y_SCALE, *slots[1::3]),
                           zero_points=(Y_ZP, *slots[2::3]))
    y = graph.shape(node.outputs[0])
    axis = axis_of(node, len(y))
    shapes = [graph.shape(x) for x in node.inputs[2::3]]
    if any(len(s) != len(y) or s[:axis] + s[axis + 1:] != y[:axis] + y[axis + 1:] for s in shapes) \
            or sum(s[axis] for s in shapes) != y[axis]:
        raise invalid(node, f"inputs of shapes {[list(s) for s in shapes]} concatenated into {list(y)} on axis {axis}")


def emit(node, c):
    y = node.outputs[0]
    shape = c.shape(y)
    axis = axis_of(node, len(shape))
    inner, outer = prod(shape[axis + 1:]), prod(shape[:axis])
    s_y, zp = _qlinear.scale(c, node, Y_SCALE)[0], _qlinear.zero_point(c, node, Y_ZP)
    datas = node.inputs[2::3]
    starts = accumulate((c.shape(x)[axis] for x in datas[:-1]), initial=0)
    calls = []
    for base, x, start in zip(range(2, len(node.inputs), 3), datas, starts):
        rq = _qlinear.requant_c(c, node, _qlinear.scale(c, node, base + 1) / s_y, zp)
        calls.append(f"mt_rescale_s8({c.ptr(x)}, {_qlinear.zero_point(c, node, base + 2)}, {c.ptr(y)} + "
                     f"{start * inner}, {outer}, {c.shape(x)[axis] * inner}, {shape[axis] * inner}, {rq});")
    return "\n    ".join(calls)


def grad(node, g):
    """The masked dY (an input rescaled to the output's scale may saturate), cut back into the
    inputs as Concat's gradient."""
    dz = masked(g, node.outputs[0], "QuantizedMask")
    axis = axis_of(node, len(g.shape(node.outputs[0])))
    datas = Node("Concat", node.inputs[2::3], node.outputs)
    for slot, offset in zip(range(2, len(node.inputs), 3), offsets(datas, g.shape, axis)):
        if g.needs(slot):
            g.give(slot, g.op("ConcatGrad", [dz], like=node.inputs[slot], attrs={"axis": axis, "offset": offset}))


def shape(node, shapes, dtypes):
    datas = shapes[2::3]
    axis = axis_of(node, len(datas[0]))
    return (*datas[0][:axis], sum(s[axis] for s in datas), *datas[0][axis + 1:]), dtypes[Y_ZP]

register("QLinearConcat", int8=True, kernel="eltwise_s8.h", emit=emit, grad=grad,
         diff_inputs=tuple(range(2, 2 + 3 * MAX_INPUTS, 3)), check=check, shape=shape, domain="com.microsoft")
