from math import prod

from . import invalid, register
from ._layout import vector
from .view import view_grad


def check(node, graph):
    """onnx infers the target shape from the (folded) shape input without counting elements."""
    vector(node, graph, 1, "shape")
    x, y = (graph.shape(t) for t in (node.inputs[0], node.outputs[0]))
    if prod(x) != prod(y):
        raise invalid(node, f"reshaping {list(x)} ({prod(x)} elements) to {list(y)} ({prod(y)} elements)")


# The target shape comes from onnx shape inference (the shape input is folded to a constant).
register("Reshape", kernel=None, emit=None, view=True, grad=view_grad, check=check)
