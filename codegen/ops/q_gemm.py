"""QGemm (com.microsoft): int8 Gemm of the frozen layers, Y = alpha * A' B' + C with A' = A or
A^T, B' = B or B^T; per-tensor A, per-tensor or per-column B scale and zero point; C an int32
tensor broadcast to (M, N) at scale alpha * a_scale * b_scale. The float output (no y_scale)
is refused; gradients flow to A and C (transA=0)."""
import numpy as np

from . import _broadcast, _qlinear, attr, invalid, refuse, register, register_train_op
from .mask import masked
from .sum_to import reduce_to
from ._layout import check_flags

A, A_SCALE, A_ZP, B, B_SCALE, B_ZP, C, Y_SCALE, Y_ZP = range(9)


def check(node, graph):
    check_flags(node, "transA", "transB")
    if not _qlinear.present(node, Y_SCALE):
        raise refuse(node, "QGemm with a float output (no y_scale)")
    _qlinear.check_tensors(node, graph, data=(A, B), scales=(A_SCALE, B_SCALE, Y_SCALE),
                           zero_points=(A_ZP, B_ZP, Y_ZP), per_axis=(B_SCALE, B_ZP))
    y, a, b = (graph.shape(t) for t in (node.outputs[0], node.inputs[A], node.inputs[B]))
    a, b = (a[::-1] if attr(node, "transA", 0) else a), (b[::-1] if attr(node, "transB", 0) else b)
    if len(a) != 2 or len(b) != 2 or a[1] != b[0] or tuple(y) != (a[0], b[1]):
        raise invalid(node, f"output {list(y)} from A {list(a)} and B {list(b)} (after transA/transB)")
    _qlinear.check_per_axis(node, graph, (B_SCALE, B_ZP), y[-1], "columns")
    if _qlinear.present(node, C):
        _broadcast.check_broadcast(node, graph, C, "C")
    _qlinear.check_sums(node, graph, a[1], C)


def emit(node, c):
    a, b, y = node.inputs[A], node.inputs[B], node.outputs[0]
    m, n = c.shape(y)
    k = c.shape(a)[0 if attr(node, "transA", 0) else 1]
    reals = (attr(node, "alpha", 1.0) * _qlinear.scale(c, node, A_SCALE) * _qlinear.scale(c, node, B_SCALE)
             / _qlinear.scale(c, node, Y_SCALE))
    rq = _qlinear.requant_c(c, node, reals, _qlinear.zero_point(c, node, Y_ZP))
    if _qlinear.present(node, C):
        bias = c.ptr(node.inputs[C])
        csm, csn = _broadcast.strides_over(c.shape(node.inputs[C]), (m, n))
    else:
        bias, csm, csn = "NULL", 0, 0
    return (f"mt_gemm_s8({c.ptr(a)}, {_qlinear.zero_point(c, node, A_ZP)}, {c.ptr(b)}, "
            f"{_qlinear.zero_points(c, node, B_ZP, n)}, {bias}, {csm}, {csn}, {c.ptr(y)}, {m}, {k}, {n}, "
            f"{attr(node, 'transA', 0)}, {attr(node, 'transB', 0)}, {rq});")


def grad(node, g):
    """Of the masked dY: dA through the real weights (alpha folded into their scales), dC the sum
    over rows (C broadcast as in the forward); for integers that train (--update int8) the QAS
    gradients of C and, after dA, B (ops/qas.py)."""
    if attr(node, "transA", 0):
        raise refuse(node, "a gradient through QGemm with transA=1")
    dz = masked(g, node.outputs[0], "QuantizedMask")
    if g.needs(C):  # an int32 parameter (--update int8): its QAS gradient (ops/qas.py)
        g.give(C, g.op("QasGradB", [dz, node.inputs[A_SCALE], node.inputs[B_SCALE]], like=node.inputs[C])
               if g.integer_param(node.inputs[C]) else reduce_to(g, dz, node.inputs[C]))
    if g.needs(A):
        g.give(A, g.op("QGemmGradX", [dz, *node.inputs[B:B_ZP + 1]], like=node.inputs[A],
                       attrs={"transB": attr(node, "transB", 0), "alpha": attr(node, "alpha", 1.0)}))
    if g.needs(B):  # after dA, which reads B: plain SGD then updates B in this kernel
        if attr(node, "alpha", 1.0) != 1.0:
            raise refuse(node, "training the int8 weights of a QGemm with alpha != 1")
        g.give(B, g.op("QGemmGradW", [dz, *node.inputs[A:A_ZP + 1], node.inputs[B_SCALE]], like=node.inputs[B],
                       attrs={"transB": attr(node, "transB", 0)}))


def emit_grad_x(node, c):
    """Also QLinearMatMul's (transB=0, per-column scales)."""
    (dz, b, _, _), da = node.inputs, node.outputs[0]
    k, n = c.shape(da)[-1], c.shape(dz)[-1]
    scales = c.floats(attr(node, "alpha", 1.0) * np.broadcast_to(c.value(node.inputs[2]).reshape(-1), (n,)))
    return (f"mt_gemm_grad_x_s8w({c.ptr(dz)}, {c.ptr(b)}, {_qlinear.zero_points(c, node, 3, n)}, {scales}, "
            f"{c.ptr(da)}, {c.size(da) // k}, {k}, {n}, {attr(node, 'transB', 0)});")


def shape(node, shapes, dtypes):
    a, b = shapes[A], shapes[B]
    rows, cols = a[1] if attr(node, "transA", 0) else a[0], b[0] if attr(node, "transB", 0) else b[1]
    return (rows, cols), dtypes[Y_ZP] if len(dtypes) > Y_ZP and dtypes[Y_ZP] is not None else np.float32

register("QGemm", int8=True, kernel="gemm_s8.h", emit=emit, grad=grad, diff_inputs=(A, B, C), check=check, shape=shape,
         domain="com.microsoft")
register_train_op("QGemmGradX", int8=True, kernel="backward_s8.h", emit=emit_grad_x)
