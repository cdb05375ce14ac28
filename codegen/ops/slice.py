"""Slice with constant starts/ends/axes/steps (numpy semantics: negative values count from the
end, out-of-range ones clamp, negative steps walk backwards). The output reads the input from
one offset with per-axis strides (step * row-major stride); the gradient writes dy back to those
places in a zeroed dx."""
from math import prod

from . import register, register_train_op
from ._layout import check_rank, ints, norm_axes, row_major, vector


def walk(node, graph, shape) -> tuple[int, list[int]]:
    """(element offset of the first output element, element strides over the output's shape)."""
    rank = len(shape)
    starts, ends = vector(node, graph, 1, "starts"), vector(node, graph, 2, "ends")
    axes, steps = vector(node, graph, 3, "axes"), vector(node, graph, 4, "steps")
    axes = range(len(starts)) if axes is None else axes  # onnx's shape inference checked them
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
    first, step = [0] * rank, [1] * rank
    for a, s, e, k in zip(norm_axes(axes, rank), starts, ends, steps):
        first[a], step[a] = range(shape[a])[slice(int(s), int(e), k)].start, k
    sx = row_major(shape)
    return sum(f * k for f, k in zip(first, sx)), [k * s for k, s in zip(sx, step)]


def check(node, graph):
    check_rank(node, len(graph.shape(node.inputs[0])))
    walk(node, graph, graph.shape(node.inputs[0]))


def args(c, node, data: str, out: str) -> str:
    """The kernels' last arguments: offset, output size, rank, output shape, strides."""
    off, strides = walk(node, c.tg.graph, c.shape(data))
    shape = c.shape(out)
    return f"{off}, {prod(shape)}, {len(shape)}, {ints(c, shape)}, {ints(c, strides)}"


def emit(node, c):
    x, y = node.inputs[0], node.outputs[0]
    return f"mt_slice({c.ptr(x)}, {c.ptr(y)}, {args(c, node, x, y)});"


def grad(node, g):
    """SliceGrad(dy, starts, ends, axes, steps): the constant inputs ride along in their slots."""
    g.give(0, g.op("SliceGrad", [g.dy(), *node.inputs[1:]], like=node.inputs[0]))


def emit_grad(node, c):
    dy, dx = node.inputs[0], node.outputs[0]
    return f"mt_slice_grad({c.ptr(dy)}, {c.ptr(dx)}, {c.size(dx)}, {args(c, node, dx, dy)});"


register("Slice", kernel="index.h", emit=emit, grad=grad, check=check)
register_train_op("SliceGrad", kernel="index.h", emit=emit_grad)
