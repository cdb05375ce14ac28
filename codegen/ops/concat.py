"""Concat along `axis` (negative counts from the end) of 2+ inputs. Each input is one box copy
into its slab of the output, viewed as (outer, axis * inner); the gradient copies each slab back."""
from itertools import accumulate
from math import prod

from . import attr, refuse, register, register_train_op

MAX_INPUTS = 256  # every input slot is differentiable; diff_inputs must list them


def axis_of(node, rank: int) -> int:
    axis = int(attr(node, "axis"))
    return axis + rank if axis < 0 else axis


def check(node, graph):
    if len(node.inputs) > MAX_INPUTS:
        raise refuse(node, f"Concat of {len(node.inputs)} inputs (at most {MAX_INPUTS})")


def copy_slab(c, whole: str, part: str, axis: int, offset: int, into_whole: bool) -> str:
    """The mt_copy_box call between `part` and its slab of `whole` starting at `offset` on axis."""
    shape = c.shape(whole)
    inner = prod(shape[axis + 1:])
    chunk = c.shape(part)[axis] * inner
    slab = (f"{c.ptr(whole)} + {offset * inner}", c.ints([shape[axis] * inner, 1]))
    dense = (c.ptr(part), c.ints([chunk, 1]))
    (src, ss), (dst, ds) = (dense, slab) if into_whole else (slab, dense)
    return f"mt_copy_box({src}, {ss}, {dst}, {ds}, 2, {c.ints([prod(shape[:axis]), chunk])});"


def offsets(node, shape_of, axis: int) -> list[int]:
    """Where each input starts along the axis."""
    return [0, *accumulate(shape_of(x)[axis] for x in node.inputs[:-1])]


def emit(node, c):
    y = node.outputs[0]
    axis = axis_of(node, len(c.shape(y)))
    return "\n    ".join(copy_slab(c, y, x, axis, off, into_whole=True)
                         for x, off in zip(node.inputs, offsets(node, c.shape, axis)))


def grad(node, g):
    axis = axis_of(node, len(g.shape(node.outputs[0])))
    for i, off in enumerate(offsets(node, g.shape, axis)):
        if g.needs(i):
            g.give(i, g.op("ConcatGrad", [g.dy()], like=node.inputs[i], attrs={"axis": axis, "offset": off}))


def emit_grad(node, c):
    a = node.attrs
    return copy_slab(c, node.inputs[0], node.outputs[0], a["axis"], a["offset"], into_whole=False)


register("Concat", kernel="box.h", emit=emit, grad=grad, diff_inputs=tuple(range(MAX_INPUTS)), check=check)
register_train_op("ConcatGrad", kernel="box.h", emit=emit_grad)
