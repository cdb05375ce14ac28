"""LRN (local response normalization across channels, AlexNet-style): y = x / (bias + alpha / size *
sum of x^2 over a window of `size` channels)^beta. ONNX defaults alpha 1e-4, beta 0.75, bias 1;
`size` is required. The gradient recomputes the window sums from x (O(size^2) per element)
instead of keeping the denominators: no memory beyond the forward's x and y."""
from . import attr, invalid, register, register_train_op
from ._softmax import split


def dims(node, c):
    """(outer, channels, inner) of input 0 and the attributes, as the kernels take them."""
    outer, n, inner = split(c.shape(node.inputs[0]), 1)
    alpha, beta, bias = (attr(node, k, d) for k, d in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    return f"{outer}, {n}, {inner}, {attr(node, 'size')}, {c.f(alpha)}, {c.f(beta)}, {c.f(bias)}"


def check(node, graph):
    if attr(node, "size") < 1:
        raise invalid(node, f"size {attr(node, 'size')} is below 1")
    if len(graph.shape(node.inputs[0])) < 2:
        raise invalid(node, f"input of shape {list(graph.shape(node.inputs[0]))} has no channel axis")


def emit(node, c):
    return f"mt_lrn({c.ptr(node.inputs[0])}, {c.ptr(node.outputs[0])}, {dims(node, c)});"


def grad(node, g):
    g.give(0, g.op("LRNGrad", [g.dy(), node.inputs[0], node.outputs[0]], like=node.inputs[0], attrs=node.attrs))


def emit_grad(node, c):
    dy, x, y = (c.ptr(i) for i in node.inputs)
    return f"mt_lrn_grad({dy}, {x}, {y}, {c.ptr(node.outputs[0])}, {dims(node, c)});"


register("LRN", kernel="lrn.h", emit=emit, grad=grad, check=check)
register_train_op("LRNGrad", kernel="lrn.h", emit=emit_grad)
