"""Shared shape of elementwise activations: y = f(x), dx = f'(dy, x or y)."""
from . import register, register_train_op


def gradient(name: str, grad_from):
    """The rule dx = <name>Grad(dy, x or y, *the node's other (constant) inputs)."""

    def grad(node, g):
        side = grad_from(node) if callable(grad_from) else grad_from
        source = node.inputs[0] if side == "x" else node.outputs[0]
        g.give(0, g.op(f"{name}Grad", [g.dy(), source, *node.inputs[1:]], like=node.inputs[0], attrs=node.attrs))

    return grad


def register_unary(name: str, fn: str, grad_from, params=lambda node, c: "", grad=None, check=None,
                   grad_params=None):
    """Register op `name` (kernel `fn`) and its gradient op `<name>Grad` (kernel `fn_grad`).

    grad_from: "x" if the derivative is computed from the input, "y" if from the output (or a
    function of the node giving either). From "y" lets the input die at the op, so the op runs
    in place and only one of the two tensors stays alive for backward. None: the derivative
    needs neither (Neg), `grad` builds it from other ops and there is no `<name>Grad`.
    params: extra kernel arguments from the node's attributes, e.g. ", 0.01f".
    grad_params: the gradient kernel's extra arguments (default: params).
    grad: a rule of its own instead of gradient(name, grad_from).
    check: refuses the node's unsupported attributes or inputs.
    """

    def emit(node, c):
        x, y = node.inputs[0], node.outputs[0]
        return f"{fn}({c.ptr(x)}, {c.ptr(y)}, {c.size(y)}{params(node, c)});"

    def emit_grad(node, c):
        dy, source = node.inputs[:2]
        dx = node.outputs[0]
        return f"{fn}_grad({c.ptr(dy)}, {c.ptr(source)}, {c.ptr(dx)}, {c.size(dx)}{(grad_params or params)(node, c)});"

    register(name, kernel="unary.h", emit=emit, grad=grad or gradient(name, grad_from), check=check, inplace=True)
    if grad_from is not None:
        register_train_op(f"{name}Grad", kernel="unary.h", emit=emit_grad, inplace=True)
