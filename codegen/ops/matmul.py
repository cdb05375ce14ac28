"""MatMul with numpy semantics: 1-D operands are promoted, leading (batch) dims broadcast when
one side has none or both have the same."""
from math import prod

from . import refuse, register, register_train_op


def plan(a_shape, b_shape):
    """(batch, M, N, K, batch stride of A, of B, of Y); a stride of 0 broadcasts that operand."""
    a = (1,) + tuple(a_shape) if len(a_shape) == 1 else tuple(a_shape)
    b = tuple(b_shape) + (1,) if len(b_shape) == 1 else tuple(b_shape)
    (m, k), n = a[-2:], b[-1]
    ba, bb = prod(a[:-2]), prod(b[:-2])
    batch = max(ba, bb)
    return batch, m, n, k, (m * k if ba > 1 else 0), (k * n if bb > 1 else 0), m * n


def check(node, graph):
    a, b = (graph.shape(i) for i in node.inputs)
    a_batch, b_batch = tuple(a[:-2]), tuple(b[:-2])
    if prod(a_batch) > 1 and prod(b_batch) > 1 and a_batch != b_batch:
        raise refuse(node, f"MatMul broadcasting batch dims {a_batch} against {b_batch}")


def emit(node, c):
    a, b = node.inputs
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
    if node.attrs["wrt"] == 0:
        batch, m, n, k, sa, sb, sy = plan(c.shape(out), c.shape(other))
        return (f"mt_matmul({batch}, {m}, {k}, {n}, {c.ptr(dy)}, {sy}, 0, {c.ptr(other)}, {sb}, 1, "
                f"{c.ptr(out)}, {sa}, {scale}, {keep});")
    batch, m, n, k, sa, sb, sy = plan(c.shape(other), c.shape(out))
    return (f"mt_matmul({batch}, {k}, {n}, {m}, {c.ptr(other)}, {sa}, 1, {c.ptr(dy)}, {sy}, 0, "
            f"{c.ptr(out)}, {sb}, {scale}, {keep});")


register("MatMul", kernel="matmul.h", emit=emit, grad=grad, diff_inputs=(0, 1), check=check)
register_train_op("MatMulGrad", kernel="matmul.h", emit=emit_grad, emit_update=emit_grad)
