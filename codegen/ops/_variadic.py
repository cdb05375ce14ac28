"""Shared shape of the variadic elementwise ops (Sum, Mean, Max, Min): 1..MAX_INPUTS float
inputs, multidirectional (numpy) broadcasting to the output's shape, kernels in variadic.h."""
from . import refuse, register, register_train_op
from ._broadcast import check_broadcast, check_rank, strides_over
from .sum_to import reduce_to

MAX_INPUTS = 16  # MT_VARIADIC_MAX in runtime_c/kernels/variadic.h


def check(node, graph):
    if not 1 <= len(node.inputs) <= MAX_INPUTS or not all(node.inputs):
        raise refuse(node, f"{node.op} of {len(node.inputs)} inputs (1 to {MAX_INPUTS}, none omitted)")
    check_rank(node, graph)
    for slot in range(len(node.inputs)):
        check_broadcast(node, graph, slot, f"input {slot}")


def operands(c, xs: list[str], out: tuple, middle: str) -> str:
    """C arguments `k, xs, <middle>, rank, shape, strides` for inputs xs broadcast to shape out."""
    ptrs = f"(const float *const[]){{{', '.join(c.ptr(x) for x in xs)}}}"
    if all(c.shape(x) == out for x in xs):
        return f"{len(xs)}, {ptrs}, {middle}, 0, NULL, NULL"
    strides = [s for x in xs for s in strides_over(c.shape(x), out)]
    return f"{len(xs)}, {ptrs}, {middle}, {len(out)}, {c.ints(out)}, {c.ints(strides)}"


def register_sum(name: str, mean: bool) -> None:
    def emit(node, c):
        y = node.outputs[0]
        scale = 1.0 / len(node.inputs) if mean else 1.0
        args = operands(c, node.inputs, c.shape(y), c.ptr(y))
        return f"mt_vsum({args}, {c.size(y)}, {c.f(scale)});"

    def grad(node, g):
        scale = 1.0 / len(node.inputs) if mean else 1.0
        for i, x in enumerate(node.inputs):
            if g.needs(i):
                g.give(i, reduce_to(g, g.dy(), x, scale=scale))

    register(name, kernel="variadic.h", emit=emit, grad=grad, diff_inputs=tuple(range(MAX_INPUTS)),
             check=check)


def register_extreme(name: str, fn: str) -> None:
    """Max (fn mt_vmax) or Min (mt_vmin); ties split the gradient evenly among the inputs equal to
    the output (VariadicExtremeGrad gives each its share over the output's shape)."""
    def emit(node, c):
        y = node.outputs[0]
        return f"{fn}({operands(c, node.inputs, c.shape(y), c.ptr(y))}, {c.size(y)});"

    def grad(node, g):
        y = node.outputs[0]
        if len(node.inputs) == 1:
            g.give(0, g.dy())
            return
        for i, x in enumerate(node.inputs):
            if g.needs(i):
                share = g.op("VariadicExtremeGrad", [g.dy(), y, *node.inputs], like=y, attrs={"which": i})
                g.give(i, reduce_to(g, share, x))

    register(name, kernel="variadic.h", emit=emit, grad=grad, diff_inputs=tuple(range(MAX_INPUTS)),
             check=check)


def _emit_extreme_grad(node, c):
    dy, y, *xs = node.inputs
    dx = node.outputs[0]
    args = operands(c, xs, c.shape(y), f"{c.ptr(y)}, {c.ptr(dy)}, {c.ptr(dx)}, {node.attrs['which']}")
    return f"mt_vextreme_grad({args}, {c.size(dx)});"


register_train_op("VariadicExtremeGrad", kernel="variadic.h", emit=_emit_extreme_grad)
