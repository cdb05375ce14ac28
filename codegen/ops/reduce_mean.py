"""ReduceMean over constant axes (input 1 since opset 18; none means all axes, or no reduction
with noop_with_empty_axes=1), keepdims 0/1. The forward is a SumTo scaled by 1/count; the gradient
broadcasts dy / count back over the reduced axes."""
from math import prod

from . import attr, register, register_train_op
from ._broadcast import strides_over
from ._layout import check_flags, check_rank, ints, norm_axes, vector


def reduced(node, graph, full: tuple) -> tuple[list[int], float]:
    """For the unreduced shape `full`: (strides of the kept-dims result over it, 1 / count).
    Reads the node's attrs and axes input, which ReduceMeanGrad shares with its ReduceMean."""
    axes = vector(node, graph, 1, "axes")
    if axes is None or axes.size == 0:
        axes = [] if attr(node, "noop_with_empty_axes", 0) else range(len(full))
    axes = set(norm_axes(axes, len(full)))
    kept = [1 if d in axes else n for d, n in enumerate(full)]
    return strides_over(kept, full), 1.0 / prod(full[d] for d in axes)


def check(node, graph):
    full = graph.shape(node.inputs[0])
    check_rank(node, len(full))
    check_flags(node, "keepdims", "noop_with_empty_axes")
    reduced(node, graph, full)


def _walk(node, c, full: tuple) -> tuple[str, str]:
    """The kernels' rank, shape and strides arguments over the unreduced shape, and 1 / count."""
    strides, scale = reduced(node, c.tg.graph, full)
    return f"{len(full)}, {ints(c, full)}, {ints(c, strides)}", c.f(scale)


def emit(node, c):
    x, y = node.inputs[0], node.outputs[0]
    walk, scale = _walk(node, c, c.shape(x))
    return f"mt_sum_to({c.ptr(x)}, {c.ptr(y)}, {c.size(y)}, {walk}, {c.size(x)}, {scale}, 0.0f);"


def grad(node, g):
    g.give(0, g.op("ReduceMeanGrad", [g.dy(), *node.inputs[1:2]], like=node.inputs[0], attrs=node.attrs))


def emit_grad(node, c):
    dy, dx = node.inputs[0], node.outputs[0]
    walk, scale = _walk(node, c, c.shape(dx))
    return f"mt_gather_strided({c.ptr(dy)}, {c.ptr(dx)}, {c.size(dx)}, {walk}, {scale});"


register("ReduceMean", kernel="sum_to.h", emit=emit, grad=grad, check=check)
register_train_op("ReduceMeanGrad", kernel="strided.h", emit=emit_grad)
