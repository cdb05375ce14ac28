"""AveragePool (1-D and 2-D, dilations, count_include_pad): dX spreads dY / divisor over each
window's input taps."""
from . import _window, attr, register, register_train_op


def _count_pad(node) -> int:
    return int(attr(node, "count_include_pad", 0))


def emit(node, c):
    x, y = node.inputs[0], node.outputs[0]
    return f"mt_avg_pool({c.ptr(x)}, {c.ptr(y)}, {_window.pool_args(node, c, x)}, {_count_pad(node)});"


def grad(node, g):
    g.give(0, g.op("AveragePoolGrad", [g.dy()], like=node.inputs[0], attrs=node.attrs))


def emit_grad(node, c):
    dy, dx = node.inputs[0], node.outputs[0]
    return f"mt_avg_pool_grad({c.ptr(dy)}, {c.ptr(dx)}, {_window.pool_args(node, c, dx)}, {_count_pad(node)});"


register("AveragePool", kernel="pool.h", emit=emit, grad=grad, check=_window.check_pool)
register_train_op("AveragePoolGrad", kernel="pool.h", emit=emit_grad)
