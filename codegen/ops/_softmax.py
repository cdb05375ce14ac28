"""Shared shape of Softmax and LogSoftmax: a normalisation along one axis."""
from math import prod

from . import attr, register, register_train_op


def split(shape, axis):
    """View `shape` as (outer, n, inner) around `axis`."""
    axis %= len(shape)
    return prod(shape[:axis]), shape[axis], prod(shape[axis + 1:])


def register_softmax(name: str, fn: str):
    def dims(node, c):
        outer, n, inner = split(c.shape(node.outputs[0]), attr(node, "axis", -1))
        return f"{outer}, {n}, {inner}"

    def emit(node, c):
        return f"{fn}({c.ptr(node.inputs[0])}, {c.ptr(node.outputs[0])}, {dims(node, c)});"

    def grad(node, g):
        g.give(0, g.op(f"{name}Grad", [g.dy(), node.outputs[0]], like=node.inputs[0], attrs=node.attrs))

    def emit_grad(node, c):
        dy, y = node.inputs
        return f"{fn}_grad({c.ptr(dy)}, {c.ptr(y)}, {c.ptr(node.outputs[0])}, {dims(node, c)});"

    register(name, kernel="softmax.h", emit=emit, grad=grad, inplace=True)
    register_train_op(f"{name}Grad", kernel="softmax.h", emit=emit_grad, inplace=True)
