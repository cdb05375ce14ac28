"""MaxPool (1-D and 2-D): the gradient goes to each window's first maximum, recomputed from X.
On an int8 tensor (a frozen quantized layer; same scale and zero point in and out) the int8
kernels run."""
from . import _window, refuse, register, register_train_op


def check(node, graph):
    """storage_order only orders the Indices output, refused when something reads it."""
    if len(node.outputs) > 1 and node.outputs[1]:
        raise refuse(node, "the Indices output of MaxPool")
    _window.check_pool(node, graph)


def emit(node, c):
    x, y = node.inputs[0], node.outputs[0]
    kernel = "mt_max_pool_s8" if c.tg.graph.tensors[x].dtype == "int8" else "mt_max_pool"
    return f"{kernel}({c.ptr(x)}, {c.ptr(y)}, {_window.pool_args(node, c, x)});"


def grad(node, g):
    x = node.inputs[0]
    g.give(0, g.op("MaxPoolGrad", [g.dy(), x], like=x, attrs=node.attrs))


def emit_grad(node, c):
    (dy, x), dx = node.inputs, node.outputs[0]
    kernel = "mt_max_pool_grad_s8" if c.tg.graph.tensors[x].dtype == "int8" else "mt_max_pool_grad"
    return f"{kernel}({c.ptr(dy)}, {c.ptr(x)}, {c.ptr(dx)}, {_window.pool_args(node, c, x)});"


register("MaxPool", int8=True, kernel="pool_s8.h", emit=emit, grad=grad, check=check)
register_train_op("MaxPoolGrad", kernel="pool_s8.h", emit=emit_grad)
