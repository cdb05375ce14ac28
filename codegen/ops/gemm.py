"""Gemm: Y = alpha * op(A) op(B) + beta * C, C broadcast to (M, N)."""
from . import attr, register
from ._broadcast import check_broadcast
from ._layout import check_flags
from .sum_to import reduce_to


def _flags(node):
    return (attr(node, "alpha", 1.0), attr(node, "beta", 1.0),
            int(attr(node, "transA", 0)), int(attr(node, "transB", 0)))


def check(node, graph):
    """onnx's shape inference does not look at C."""
    check_flags(node, "transA", "transB")
    if len(node.inputs) > 2 and node.inputs[2]:
        check_broadcast(node, graph, 2, "bias C")


def emit(node, c):
    a, b = node.inputs[:2]
    alpha, beta, ta, tb = _flags(node)
    bias, csm, csn = "NULL", 0, 0
    if len(node.inputs) > 2 and node.inputs[2]:
        cm, cn = ((1, 1) + tuple(c.shape(node.inputs[2])))[-2:]
        bias, csm, csn = c.ptr(node.inputs[2]), (cn if cm > 1 else 0), (1 if cn > 1 else 0)
    return _call(node, c, c.f(alpha), c.f(beta), bias, csm, csn)


def emit_update(node, c, scale, keep):
    """Y = keep * Y + scale * alpha * op(A) op(B): the bias-free Gemms of the backward pass."""
    y = c.ptr(node.outputs[0])
    return _call(node, c, f"{scale} * {c.f(_flags(node)[0])}", keep, y, c.shape(node.outputs[0])[1], 1)


def _call(node, c, alpha, beta, bias, csm, csn):
    a, b = node.inputs[:2]
    _, _, ta, tb = _flags(node)
    m, n = c.shape(node.outputs[0])
    k = c.shape(a)[0 if ta else 1]
    return (f"mt_gemm({m}, {n}, {k}, {alpha}, {c.ptr(a)}, {ta}, {c.ptr(b)}, {tb}, "
            f"{beta}, {bias}, {csm}, {csn}, {c.ptr(node.outputs[0])});")


def grad(node, g):
    """Both input gradients are Gemms again; which operand is transposed follows transA/transB."""
    a, b = node.inputs[:2]
    alpha, beta, ta, tb = _flags(node)
    dy = g.dy()
    if g.needs(0):
        if ta:
            da = g.op("Gemm", [b, dy], like=a, attrs={"alpha": alpha, "transA": tb, "transB": 1}, domain="")
        else:
            da = g.op("Gemm", [dy, b], like=a, attrs={"alpha": alpha, "transB": 1 - tb}, domain="")
        g.give(0, da)
    if g.needs(1):
        if tb:
            db = g.op("Gemm", [dy, a], like=b, attrs={"alpha": alpha, "transA": 1, "transB": ta}, domain="")
        else:
            db = g.op("Gemm", [a, dy], like=b, attrs={"alpha": alpha, "transA": 1 - ta}, domain="")
        g.give(1, db)
    if g.needs(2):
        g.give(2, reduce_to(g, dy, node.inputs[2], scale=beta))


register("Gemm", kernel="gemm.h", emit=emit, grad=grad, diff_inputs=(0, 1, 2), bias_inputs=(2,),
         emit_update=emit_update, check=check)
