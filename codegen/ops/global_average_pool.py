"""GlobalAveragePool over any number of spatial dims: each (n, c) plane to its mean."""
from math import prod

from . import refuse, register, register_train_op


def _args(c, x) -> str:
    """Plane count (N*C) and plane size."""
    shape = c.shape(x)
    return f"{shape[0] * shape[1]}, {prod(shape[2:])}"


def check(node, graph):
    if len(graph.shape(node.inputs[0])) < 3:
        raise refuse(node, "GlobalAveragePool of an input without spatial dimensions")


def emit(node, c):
    x, y = node.inputs[0], node.outputs[0]
    return f"mt_global_avg_pool({c.ptr(x)}, {c.ptr(y)}, {_args(c, x)});"


def grad(node, g):
    g.give(0, g.op("GlobalAveragePoolGrad", [g.dy()], like=node.inputs[0]))


def emit_grad(node, c):
    dy, dx = node.inputs[0], node.outputs[0]
    return f"mt_global_avg_pool_grad({c.ptr(dy)}, {c.ptr(dx)}, {_args(c, dx)});"


register("GlobalAveragePool", kernel="pool.h", emit=emit, grad=grad, check=check)
register_train_op("GlobalAveragePoolGrad", kernel="pool.h", emit=emit_grad)
