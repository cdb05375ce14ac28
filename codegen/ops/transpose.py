"""Transpose: y = x with its dimensions permuted by `perm` (default: reversed). The output is
written contiguously, the input read with permuted strides; the gradient is the inverse Transpose."""
from . import attr, register
from ._layout import check_rank, ints, row_major


def perm(node, rank: int) -> list[int]:
    given = attr(node, "perm")
    return [int(p) for p in given] if given else list(reversed(range(rank)))


def check(node, graph):
    check_rank(node, len(graph.shape(node.inputs[0])))


def emit(node, c):
    x, y = node.inputs[0], node.outputs[0]
    sx = row_major(c.shape(x))
    strides = [sx[p] for p in perm(node, len(sx))]
    return (f"mt_gather_strided({c.ptr(x)}, {c.ptr(y)}, {c.size(y)}, {len(strides)}, "
            f"{ints(c, c.shape(y))}, {ints(c, strides)}, 1.0f);")


def grad(node, g):
    p = perm(node, len(g.shape(node.inputs[0])))
    inverse = sorted(range(len(p)), key=p.__getitem__)
    g.give(0, g.op("Transpose", [g.dy()], like=node.inputs[0], attrs={"perm": inverse}, domain=""))


register("Transpose", kernel="strided.h", emit=emit, grad=grad, check=check)
