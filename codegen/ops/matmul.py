"""MatMul with numpy semantics: 1-D operands are promoted, leading (batch) dims broadcast. When
one side has no batch or both have the same, batches advance by fixed strides; otherwise (e.g.
(2, 1) against (3,)) each output batch names its operands' batches (mt_matmul_indexed)."""
from math import prod

import numpy as np

from . import register, register_train_op


def _matrices(a_shape, b_shape):
    """The operands as (..., rows, cols): a 1-D A is one row, a 1-D B one column."""
    a = (1,) + tuple(a_shape) if len(a_shape) == 1 else tuple(a_shape)
    b = tuple(b_shape) + (1,) if len(b_shape) == 1 else tuple(b_shape)
    return a, b


def _strided(a, b) -> bool:
    """One side without batch, or the same batch dims (leading 1s aside): fixed batch strides."""
    def core(s):
        while s and s[0] == 1:
            s = s[1:]
        return s
    return prod(a[:-2]) == 1 or prod(b[:-2]) == 1 or core(a[:-2]) == core(b[:-2])


def plan(a_shape, b_shape):
    """(batch, M, N, K, batch stride of A, of B, of Y); a stride of 0 broadcasts that operand."""
    a, b = _matrices(a_shape, b_shape)
    (m, k), n = a[-2:], b[-1]
    ba, bb = prod(a[:-2]), prod(b[:-2])
    batch = max(ba, bb)
    return batch, m, n, k, (m * k if ba > 1 else 0), (k * n if bb > 1 else 0), m * n


def _indexed(c, a_shape, b_shape, wrt, first_in, second_in, out, scale, keep):
    """mt_matmul_indexed for Y = A B (wrt None), dA = dY B^T (wrt 0), dB = A^T dY (wrt 1), the
    gradients summed over the batches their operand was broadcast along."""
    a, b = _matrices(a_shape, b_shape)
    (m, k), n = a[-2:], b[-1]
    y_batch = np.broadcast_shapes(a[:-2], b[:-2])
    ids = [np.broadcast_to(np.arange(prod(s[:-2])).reshape(s[:-2]), y_batch).ravel() for s in (a, b)]
    a_off, b_off, y_off = ids[0] * m * k, ids[1] * k * n, np.arange(prod(y_batch)) * m * n
    if wrt is None:
        dims, offs, trans, written = (m, n, k), (a_off, b_off, y_off), (0, 0), y_off
    elif wrt == 0:
        dims, offs, trans, written = (m, k, n), (y_off, b_off, a_off), (0, 1), a_off
    else:
        dims, offs, trans, written = (k, n, m), (a_off, y_off, b_off), (1, 0), b_off
    first = [int(o not in written[:i]) for i, o in enumerate(written)]
    x0, x1, y = (c.ints(list(o)) for o in offs)
    return (f"mt_matmul_indexed({len(y_off)}, {dims[0]}, {dims[1]}, {dims[2]}, {c.ptr(first_in)}, {x0}, {trans[0]}, "
            f"{c.ptr(second_in)}, {x1}, {trans[1]}, {c.ptr(out)}, {y}, {c.ints(first)}, {scale}, {keep});")


def emit(node, c):
    a, b = node.inputs
    if not _strided(*_matrices(c.shape(a), c.shape(b))):
        return _indexed(c, c.shape(a), c.shape(b), None, a, b, node.outputs[0], "1.0f", "0.0f")
    batch, m, n, k, sa, sb, sy = plan(c.shape(a), c.shape(b))
    return (f"mt_matmul({batch}, {m}, {n}, {k}, {c.ptr(a)}, {sa}, 0, {c.ptr(b)}, {sb}, 0, "
            f"{c.ptr(node.outputs[0])}, {sy}, 1.0f, 0.0f);")


def grad(node, g):
    for i in (0, 1):
        if g.needs(i):
            g.give(i, g.op("MatMulGrad", [g.dy(), node.inputs[1 - i]], like=node.inputs[i], attrs={"wrt": i}))


def emit_grad(node, c, scale="1.0f", keep="0.0f"):
    """dA = dY B^T, dB = A^T dY, summed over the batch where that operand was broadcast."""
    dy, other = node.inputs
    out = node.outputs[0]
    wrt = node.attrs["wrt"]
    a_shape, b_shape = (c.shape(out), c.shape(other)) if wrt == 0 else (c.shape(other), c.shape(out))
    if not _strided(*_matrices(a_shape, b_shape)):
        pair = (dy, other) if wrt == 0 else (other, dy)
        return _indexed(c, a_shape, b_shape, wrt, *pair, out, scale, keep)
    if wrt == 0:
        batch, m, n, k, sa, sb, sy = plan(c.shape(out), c.shape(other))
        return (f"mt_matmul({batch}, {m}, {k}, {n}, {c.ptr(dy)}, {sy}, 0, {c.ptr(other)}, {sb}, 1, "
                f"{c.ptr(out)}, {sa}, {scale}, {keep});")
    batch, m, n, k, sa, sb, sy = plan(c.shape(other), c.shape(out))
    return (f"mt_matmul({batch}, {k}, {n}, {m}, {c.ptr(other)}, {sa}, 1, {c.ptr(dy)}, {sy}, 0, "
            f"{c.ptr(out)}, {sb}, {scale}, {keep});")


register("MatMul", kernel="matmul.h", emit=emit, grad=grad, diff_inputs=(0, 1))
register_train_op("MatMulGrad", kernel="matmul.h", emit=emit_grad, emit_update=emit_grad)
