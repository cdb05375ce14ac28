"""Slice with constant starts/ends/axes/steps (numpy semantics: negative values count from the
end, out-of-range ones clamp, negative steps walk backwards). The output reads the input from
one offset with per-axis strides (step * row-major stride); the gradient writes dy back to those
places in a zeroed dx."""
from math import prod

from . import register, register_train_op
from ._layout import check_rank, norm_axes, row_major, vector


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


def emit_slice(c, node, data: str, part: str, grad: bool) -> str:
    """part = the slice of data (forward), or data = zeros with part written into its slice
    (gradient). Rows that stay contiguous (forward steps on the last axis, none reversed) are
    copied with one memcpy each (mt_copy_box), others element by element."""
    off, strides = walk(node, c.tg.graph, c.shape(data))
    shape = c.shape(part)
    zero = f"mt_zero({c.ptr(data)}, {c.size(data)});\n    " if grad else ""
    if min(strides) > 0 and strides[-1] == 1:
        box = [(f"{c.ptr(data)} + {off}", c.ints(strides)), (c.ptr(part), c.ints(row_major(shape)))]
        (src, ss), (dst, ds) = box[::-1] if grad else box
        return f"{zero}mt_copy_box({src}, {ss}, {dst}, {ds}, {len(shape)}, {c.ints(shape)});"
    src, dst = (part, data) if grad else (data, part)
    return (f"{zero}mt_slice({c.ptr(src)}, {c.ptr(dst)}, {off}, {prod(shape)}, {len(shape)}, {c.ints(shape)}, "
            f"{c.ints(strides)}, {int(grad)});")


def emit(node, c):
    return emit_slice(c, node, node.inputs[0], node.outputs[0], grad=False)


def grad(node, g):
    """SliceGrad(dy, starts, ends, axes, steps): the constant inputs ride along in their slots."""
    g.give(0, g.op("SliceGrad", [g.dy(), *node.inputs[1:]], like=node.inputs[0]))


def emit_grad(node, c):
    return emit_slice(c, node, node.outputs[0], node.inputs[0], grad=True)


register("Slice", kernel="index.h", emit=emit, grad=grad, check=check)
register_train_op("SliceGrad", kernel="index.h", emit=emit_grad)
