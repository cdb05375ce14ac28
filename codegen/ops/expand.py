"""Expand to a constant shape (numpy broadcasting both ways): the input read with stride 0 along
the broadcast dims. The gradient sums dy back to the input's shape (SumTo)."""
from . import register
from ._broadcast import check_broadcast, strides_over
from ._layout import check_rank, ints, vector
from .sum_to import reduce_to


def check(node, graph):
    vector(node, graph, 1, "shape")
    check_rank(node, len(graph.shape(node.outputs[0])))
    check_broadcast(node, graph, 0, "input")


def emit(node, c):
    x, y = node.inputs[0], node.outputs[0]
    shape = c.shape(y)
    return (f"mt_gather_strided({c.ptr(x)}, {c.ptr(y)}, {c.size(y)}, {len(shape)}, {ints(c, shape)}, "
            f"{ints(c, strides_over(c.shape(x), shape))}, 1.0f);")


def grad(node, g):
    g.give(0, reduce_to(g, g.dy(), node.inputs[0]))


register("Expand", kernel="strided.h", emit=emit, grad=grad, check=check)
