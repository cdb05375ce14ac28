"""Gather with constant indices (any rank, negative ones counted from the end) along `axis`: x
viewed as (outer, n, inner), y[o, k, :] = x[o, idx[k], :]. The gradient scatter-adds dy into
zeros, so a repeated index accumulates, as in PyTorch."""
from math import prod

import numpy as np

from . import attr, invalid, register, register_train_op
from ._layout import constant


def layout(node, graph, shape) -> tuple[int, int, list[int], int]:
    """(outer, n, indices in [0, n), inner) of a Gather from data of `shape`."""
    rank = len(shape)
    axis = int(attr(node, "axis", 0))  # in [-rank, rank): onnx's shape inference checked it
    axis += rank if axis < 0 else 0
    n = shape[axis]
    idx = constant(node, graph, 1, "indices").astype(np.int64).ravel()
    bad = idx[(idx < -n) | (idx >= n)]
    if bad.size:
        raise invalid(node, f"index {int(bad[0])} outside [-{n}, {n}) (axis {axis} of '{node.inputs[0]}')")
    return prod(shape[:axis]), n, [int(i) % n for i in idx], prod(shape[axis + 1:])


def register_gather(name: str, layout_of) -> None:
    """Register op `name` and its gradient op `<name>Grad` (inputs dy, indices; the op's
    attributes): a gather of blocks laid out by layout_of(node, graph, data shape) -> (outer, n,
    indices in [0, n), inner)."""
    def call(c, fn: str, src: str, dst: str, node, data_shape) -> str:
        outer, n, idx, inner = layout_of(node, c.tg.graph, data_shape)
        return f"{fn}({c.ptr(src)}, {c.ptr(dst)}, {outer}, {n}, {c.ints(idx)}, {len(idx)}, {inner});"

    def check(node, graph):
        layout_of(node, graph, graph.shape(node.inputs[0]))

    def emit(node, c):
        return call(c, "mt_gather", node.inputs[0], node.outputs[0], node, c.shape(node.inputs[0]))

    def grad(node, g):
        g.give(0, g.op(f"{name}Grad", [g.dy(), node.inputs[1]], like=node.inputs[0], attrs=dict(node.attrs)))

    def emit_grad(node, c):
        return call(c, "mt_gather_grad", node.inputs[0], node.outputs[0], node, c.shape(node.outputs[0]))

    register(name, kernel="index.h", emit=emit, grad=grad, check=check)
    register_train_op(f"{name}Grad", kernel="index.h", emit=emit_grad)


register_gather("Gather", layout)
