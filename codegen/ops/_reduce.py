"""Shared by the Reduce ops: the reduced axes (constant input 1 since opset 18, 13 for ReduceSum;
none means all axes, or no reduction with noop_with_empty_axes=1), keepdims 0/1 (the output's
bytes are the same either way), and the kernels' walks over the unreduced shape.

Summing reductions (ReduceSum, ReduceMean) run as a scaled SumTo and broadcast dy back; grouped
ones (ReduceMax, ReduceL2) walk each output's group of inputs (kernels in reduce.h) forward and
backward."""
from math import prod

from . import attr, register, register_train_op
from ._broadcast import strides_over
from ._layout import check_flags, check_rank, ints, norm_axes, row_major, vector


def reduced_axes(node, graph, rank: int, slot: int = 1) -> set[int]:
    """The axes a node reduces; `slot` is where the axes input sits (a gradient node has it later)."""
    axes = vector(node, graph, slot, "axes")
    if axes is None or axes.size == 0:
        return set() if attr(node, "noop_with_empty_axes", 0) else set(range(rank))
    return set(norm_axes(axes, rank))


def check(node, graph):
    full = graph.shape(node.inputs[0])
    check_rank(node, len(full))
    check_flags(node, "keepdims", "noop_with_empty_axes")
    reduced_axes(node, graph, len(full))


def _summing_walk(node, c, full: tuple) -> tuple[str, int]:
    """mt_sum_to's / mt_gather_strided's rank, shape and strides arguments, and the group size
    (<name>Grad has the axes input at slot 1 too)."""
    axes = reduced_axes(node, c.tg.graph, len(full))
    kept = [1 if d in axes else n for d, n in enumerate(full)]
    return f"{len(full)}, {ints(c, full)}, {ints(c, strides_over(kept, full))}", prod(full[d] for d in axes)


def register_summing(name: str, mean: bool) -> None:
    """y = (1 / count if mean else 1) * the sum over the axes; dx = dy scaled alike, broadcast."""

    def scale(count: int) -> float:
        return 1.0 / count if mean else 1.0

    def emit(node, c):
        x, y = node.inputs[0], node.outputs[0]
        walk, count = _summing_walk(node, c, c.shape(x))
        return f"mt_sum_to({c.ptr(x)}, {c.ptr(y)}, {c.size(y)}, {walk}, {c.size(x)}, {c.f(scale(count))}, 0.0f);"

    def grad(node, g):
        g.give(0, g.op(f"{name}Grad", [g.dy(), *node.inputs[1:2]], like=node.inputs[0], attrs=node.attrs))

    def emit_grad(node, c):
        dy, dx = node.inputs[0], node.outputs[0]
        walk, count = _summing_walk(node, c, c.shape(dx))
        return f"mt_gather_strided({c.ptr(dy)}, {c.ptr(dx)}, {c.size(dx)}, {walk}, {c.f(scale(count))});"

    register(name, kernel="sum_to.h", emit=emit, grad=grad, check=check)
    register_train_op(f"{name}Grad", kernel="strided.h", emit=emit_grad)


def _group_walk(node, c, full: tuple, slot: int) -> str:
    """reduce.h's rank, outer, inner, strides and group arguments."""
    axes = reduced_axes(node, c.tg.graph, len(full), slot)
    outer = [1 if d in axes else n for d, n in enumerate(full)]
    inner = [n if d in axes else 1 for d, n in enumerate(full)]
    return f"{len(full)}, {ints(c, outer)}, {ints(c, inner)}, {ints(c, row_major(full))}, {prod(inner)}"


def register_grouped(name: str, kind: str) -> None:
    """y[o] = mt_reduce(kind) over output o's group; dx = mt_reduce_grad(dy, x, y) (<name>Grad reads
    x and y; its axes input is the fourth)."""

    def emit(node, c):
        x, y = node.inputs[0], node.outputs[0]
        return f"mt_reduce({c.ptr(x)}, {c.ptr(y)}, {c.size(y)}, {kind}, {_group_walk(node, c, c.shape(x), 1)});"

    def grad(node, g):
        x, y = node.inputs[0], node.outputs[0]
        g.give(0, g.op(f"{name}Grad", [g.dy(), x, y, *node.inputs[1:2]], like=x, attrs=node.attrs))

    def emit_grad(node, c):
        dy, x, y = node.inputs[:3]
        dx = node.outputs[0]
        return (f"mt_reduce_grad({c.ptr(dy)}, {c.ptr(x)}, {c.ptr(y)}, {c.ptr(dx)}, {c.size(y)}, {kind}, "
                f"{_group_walk(node, c, c.shape(x), 3)});")

    register(name, kernel="reduce.h", emit=emit, grad=grad, check=check)
    register_train_op(f"{name}Grad", kernel="reduce.h", emit=emit_grad)
