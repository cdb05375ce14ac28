"""Split along `axis` into consecutive parts: sizes from the constant `split` input or from
`num_outputs` (opset 18: equal parts, the last smaller). Each
output is one box copy of its slab (as Concat's inputs); the gradient copies each dy back into
its slab, zeros where an output has no gradient (unused, or not on the loss's path)."""
from itertools import accumulate

from . import attr, invalid, register, register_train_op
from ._layout import vector
from .concat import copy_slab


def offsets(node, graph, whole: str, split_slot: int, count: int) -> tuple[int, list[int]]:
    """(axis in [0, rank), where each of the `count` parts of `whole` starts along it)."""
    shape = graph.shape(whole)
    rank = len(shape)
    axis = int(attr(node, "axis", 0))  # in [-rank, rank): onnx's shape inference checked it
    axis += rank if axis < 0 else 0
    n, given, parts = shape[axis], vector(node, graph, split_slot, "split"), attr(node, "num_outputs")
    if given is not None and parts is not None:
        raise invalid(node, "both a 'split' input and num_outputs")
    if given is not None:
        sizes = [int(s) for s in given]
    else:  # onnx's shape inference requires one of them (opset 18)
        chunk = -(-n // int(parts)) if int(parts) > 0 else 0
        sizes = [min(chunk, max(n - k * chunk, 0)) for k in range(int(parts))]
    if len(sizes) != count or sum(sizes) != n or min(sizes, default=0) < 0:
        raise invalid(node, f"splitting {n} (axis {axis} of '{whole}') into {sizes} for {count} outputs")
    return axis, list(accumulate([0, *sizes[:-1]]))


def check(node, graph):
    offsets(node, graph, node.inputs[0], 1, len(node.outputs))


def emit(node, c):
    x = node.inputs[0]
    axis, starts = offsets(node, c.tg.graph, x, 1, len(node.outputs))
    return "\n    ".join(copy_slab(c, x, y, axis, off, into_whole=False)
                         for y, off in zip(node.outputs, starts) if y)


def grad(node, g):
    """SplitGrad(split, dy_0, ..., dy_k) with Split's attributes; absent inputs are ""."""
    split = node.inputs[1] if len(node.inputs) > 1 else ""
    dys = [g.dy(k) or "" for k in range(len(node.outputs))]
    g.give(0, g.op("SplitGrad", [split, *dys], like=node.inputs[0], attrs=dict(node.attrs)))


def emit_grad(node, c):
    dx, dys = node.outputs[0], node.inputs[1:]
    axis, starts = offsets(node, c.tg.graph, dx, 0, len(dys))
    zero = [f"mt_zero({c.ptr(dx)}, {c.size(dx)});"] if not all(dys) else []
    return "\n    ".join(zero + [copy_slab(c, dx, dy, axis, off, into_whole=True)
                                 for dy, off in zip(dys, starts) if dy])


register("Split", kernel="box.h", emit=emit, grad=grad, check=check)
register_train_op("SplitGrad", kernel="index.h", emit=emit_grad)
