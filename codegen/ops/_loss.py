"""Shared shape of the losses: loss = f(prediction, labels); the gradient op seeds backward."""
from . import LOSSES, LossDef, register_train_op


def register_loss(name: str, op: str, fn: str, label_dtype: str, label_shape, dims):
    """dims(c, prediction) -> the kernel's size arguments, e.g. "32, 10"."""

    def emit(node, c):
        p, t = node.inputs
        return f"{fn}({c.ptr(p)}, {c.ptr(t)}, {c.ptr(node.outputs[0])}, {dims(c, p)});"

    def emit_grad(node, c):
        p, t = node.inputs
        return f"{fn}_grad({c.ptr(p)}, {c.ptr(t)}, {c.ptr(node.outputs[0])}, {dims(c, p)});"

    register_train_op(op, kernel="losses.h", emit=emit)
    register_train_op(f"{op}Grad", kernel="losses.h", emit=emit_grad)
    LOSSES[name] = LossDef(name, op, label_dtype, label_shape)
