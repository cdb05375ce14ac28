"""QLinearMatMul (ONNX): int8 matrix product of the frozen layers. a (..., M, K) with a
per-tensor scale; b (K, N), per-tensor or per-column scale and zero point, or b (..., K, N)
with a's batch dims and a per-tensor scale. The gradient flows to a (b 2-D)."""
from math import prod

from . import _qlinear, refuse, register
from .mask import masked

A, A_SCALE, A_ZP, B, B_SCALE, B_ZP, Y_SCALE, Y_ZP = range(8)


def check(node, graph):
    a, b = graph.shape(node.inputs[A]), graph.shape(node.inputs[B])
    if len(a) < 2 or len(b) < 2:
        raise refuse(node, "QLinearMatMul of a 1-D operand")
    if len(b) > 2 and tuple(b[:-2]) != tuple(a[:-2]):
        raise refuse(node, f"broadcasting b {list(b)} over a {list(a)} (b 2-D, or with a's batch dimensions)")
    _qlinear.check_tensors(node, graph, data=(A, B), scales=(A_SCALE, B_SCALE, Y_SCALE),
                           zero_points=(A_ZP, B_ZP, Y_ZP), per_axis=(B_SCALE, B_ZP) if len(b) == 2 else ())
    _qlinear.check_per_axis(node, graph, (B_SCALE, B_ZP), b[-1], "columns")
    _qlinear.check_sums(node, graph, b[-2])


def emit(node, c):
    a, b, y = node.inputs[A], node.inputs[B], node.outputs[0]
    (k, n), shape_a = c.shape(b)[-2:], c.shape(a)
    batched = len(c.shape(b)) > 2
    batch, m = (prod(shape_a[:-2]), shape_a[-2]) if batched else (1, prod(shape_a[:-1]))
    reals = _qlinear.scale(c, node, A_SCALE) * _qlinear.scale(c, node, B_SCALE) / _qlinear.scale(c, node, Y_SCALE)
    rq = _qlinear.requant_c(c, node, reals, _qlinear.zero_point(c, node, Y_ZP))
    return (f"mt_matmul_s8({c.ptr(a)}, {_qlinear.zero_point(c, node, A_ZP)}, {c.ptr(b)}, "
            f"{_qlinear.zero_points(c, node, B_ZP, n)}, {c.ptr(y)}, {batch}, {m}, {k}, {n}, {k * n if batched else 0}, "
            f"{rq});")


def grad(node, g):
    """dA of the masked dY through the real b, as QGemm's (b 2-D: the rows of a are independent)."""
    if len(g.shape(node.inputs[B])) > 2:
        raise refuse(node, "a gradient through QLinearMatMul with a batched b")
    dz = masked(g, node.outputs[0], "QuantizedMask")
    if g.needs(A):
        g.give(A, g.op("QGemmGradX", [dz, *node.inputs[B:B_ZP + 1]], like=node.inputs[A], attrs={"transB": 0}))
    if g.needs(B):  # --update int8: the QAS gradient of the int8 weight (ops/qas.py), after dA
        g.give(B, g.op("QGemmGradW", [dz, *node.inputs[A:A_ZP + 1], node.inputs[B_SCALE]], like=node.inputs[B],
                       attrs={"transB": 0}))


register("QLinearMatMul", int8=True, kernel="gemm_s8.h", emit=emit, grad=grad, diff_inputs=(A, B), check=check)
