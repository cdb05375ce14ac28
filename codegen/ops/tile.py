"""Tile by constant repeats: y viewed as (r_0, d_0, r_1, d_1, ...) reads x with stride 0 along
each repeat r_k (dims of size 1 left out, so the rank stays within the kernels' limit). The
gradient sums dy over the repeats, through the same view (and can apply an SGD update directly,
as SumTo)."""
from . import refuse, register, register_train_op
from ._broadcast import MAX_RANK
from ._layout import ints, row_major, vector


def view(node, graph, shape) -> tuple[list[int], list[int]]:
    """(dims of the tiled view, x's element strides over them)."""
    repeats = vector(node, graph, 1, "repeats")  # onnx's shape inference checked them
    dims, strides = [], []
    for r, d, s in zip(repeats, shape, row_major(shape)):
        for size, stride in ((int(r), 0), (d, s)):
            if size != 1:
                dims.append(size)
                strides.append(stride)
    return dims or [1], strides or [0]


def check(node, graph):
    shape = graph.shape(node.inputs[0])
    dims = view(node, graph, shape)[0]
    if len(dims) > MAX_RANK:
        raise refuse(node, f"Tile of a {len(shape)}-D input whose tiled view has {len(dims)} dimensions "
                           f"(repeats and dims other than 1: at most {MAX_RANK})")


def emit(node, c):
    x, y = node.inputs[0], node.outputs[0]
    dims, strides = view(node, c.tg.graph, c.shape(x))
    return (f"mt_gather_strided({c.ptr(x)}, {c.ptr(y)}, {c.size(y)}, {len(dims)}, {ints(c, dims)}, "
            f"{ints(c, strides)}, 1.0f);")


def grad(node, g):
    """TileGrad(dy, repeats)."""
    g.give(0, g.op("TileGrad", [g.dy(), node.inputs[1]], like=node.inputs[0]))


def emit_grad(node, c, scale="1.0f", keep="0.0f"):
    dy, dx = node.inputs[0], node.outputs[0]
    dims, strides = view(node, c.tg.graph, c.shape(dx))
    return (f"mt_sum_to({c.ptr(dy)}, {c.ptr(dx)}, {c.size(dx)}, {len(dims)}, {ints(c, dims)}, {ints(c, strides)}, "
            f"{c.size(dy)}, {scale}, {keep});")


register("Tile", kernel="strided.h", emit=emit, grad=grad, check=check)
register_train_op("TileGrad", kernel="sum_to.h", emit=emit_grad, emit_update=emit_grad)
