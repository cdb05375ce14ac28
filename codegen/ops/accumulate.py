"""Accumulate: sums a parameter's gradient over the micro-batches of one training step (scaled
by 1/K, so the update sees the gradient of the mean loss over the whole batch)."""
from . import register_train_op


def emit(node, c):
    g, acc = node.inputs
    return (f"mt_accumulate({c.ptr(acc)}, {c.ptr(g)}, {c.size(g)}, {c.f(node.attrs['scale'])}, "
            f"{c.micro} == 0);")


register_train_op("Accumulate", kernel="accumulate.h", emit=emit)
