"""Where with a constant condition: y = cond ? X : Y (numpy broadcasting of all three). A
computed condition is refused. The gradient routes dy to the chosen side (WhereGrad: zeros
elsewhere), then sums it to that input's shape."""
import numpy as np

from . import invalid, register, register_train_op
from ._broadcast import check_broadcast, check_rank, strides_over
from ._layout import constant, ints, row_major
from .sum_to import reduce_to


def check(node, graph):
    cond = constant(node, graph, 0, "condition")
    if cond.dtype != np.bool_:
        raise invalid(node, f"a condition of type {cond.dtype} (bool)")
    check_rank(node, graph)
    for slot, what in enumerate(("condition", "X", "Y")):
        check_broadcast(node, graph, slot, what)


def where(c, node, cond: str, a: str | None, b: str | None, y: str) -> str:
    """The mt_where call; a or b None reads as 0."""
    shape = c.shape(y)

    def operand(name):
        if name is None:
            return "NULL", ints(c, row_major(shape))
        return c.ptr(name), ints(c, strides_over(c.shape(name), shape))

    flags = c.ints(c.value(cond).ravel().astype(np.uint8), "uint8_t")
    (pa, sa), (pb, sb) = operand(a), operand(b)
    sc = ints(c, strides_over(c.shape(cond), shape))
    return f"mt_where({flags}, {sc}, {pa}, {sa}, {pb}, {sb}, {c.ptr(y)}, {len(shape)}, {ints(c, shape)}, {c.size(y)});"


def emit(node, c):
    return where(c, node, *node.inputs, node.outputs[0])


def grad(node, g):
    for slot in (1, 2):
        if g.needs(slot):
            routed = g.op("WhereGrad", [node.inputs[0], g.dy()], like=node.outputs[0], attrs={"side": slot})
            g.give(slot, reduce_to(g, routed, node.inputs[slot]))


def emit_grad(node, c):
    cond, dy = node.inputs
    side = (dy, None) if node.attrs["side"] == 1 else (None, dy)
    return where(c, node, cond, *side, node.outputs[0])


# In place: an input of the output's size is read at the index being written, and only there.
register("Where", kernel="index.h", emit=emit, grad=grad, diff_inputs=(1, 2), check=check, inplace=True)
register_train_op("WhereGrad", kernel="index.h", emit=emit_grad, inplace=True)
