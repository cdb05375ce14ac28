"""Dropout. In inference form (generate --mode eval, training_mode false) the identity: a view.

Active (../shared/DECISIONS.md §5) under --mode train and in nodes whose training_mode input is
a true constant: the node becomes DropoutTrain, which draws one number per element from the
trainer's xorshift32 stream (runtime_c/kernels/dropout.h, <p>_set_seed), keeps an element when its
top 24 bits are >= ceil(ratio * 2^24), scales the kept ones by 1 / (1 - ratio) and saves the mask as
bits for the backward. predict passes the input through (PyTorch's eval()). The stream is ours,
not numpy's: the same seed gives the same masks on the host and every board, not onnx's
reference masks."""
from math import ceil

import numpy as np

from ..ir import BIT, TRAIN_DOMAIN
from . import invalid, refuse, register, register_train_op
from ._layout import scalar
from .view import view_grad

RANDOM_BITS = 24  # of each draw compared with the ratio


def _ratio(node, graph) -> float:
    ratio = scalar(node, graph, 1, "ratio")
    return 0.5 if ratio is None else ratio


def _training_mode(node, graph) -> bool:
    if len(node.inputs) < 3 or not node.inputs[2]:
        return False
    mode = graph.tensors[node.inputs[2]].value
    if mode is None:
        raise refuse(node, "a Dropout training_mode computed at run time (make it a constant)")
    return bool(mode)


def check(node, graph):
    if len(node.outputs) > 1 and node.outputs[1]:
        raise refuse(node, "using Dropout's mask output")
    ratio = _ratio(node, graph)
    if not 0 <= ratio < 1:
        raise invalid(node, f"a dropout ratio of {ratio} (outside [0, 1))")
    _training_mode(node, graph)


def threshold(ratio: float) -> int:
    """The integer the top RANDOM_BITS bits of a draw must reach for the element to be kept."""
    return ceil(ratio * (1 << RANDOM_BITS))


def training(node, graph, train: bool):
    """Switch to the active form: input 0 only (the ratio becomes attributes, so its constant is
    no longer read), outputs y and the 1-bit mask."""
    if not (train or _training_mode(node, graph)):
        return
    ratio = _ratio(node, graph)
    mask = graph.add(f"{node.outputs[0]}.mask", graph.shape(node.inputs[0]), BIT)
    node.inputs, node.outputs = node.inputs[:1], [node.outputs[0], mask]
    node.attrs = {"threshold": threshold(ratio), "scale": float(np.float32(1) / np.float32(1 - ratio))}
    node.op, node.domain = "DropoutTrain", TRAIN_DOMAIN


def emit_train(node, c):
    x, (y, mask) = node.inputs[0], node.outputs
    return (f"mt_dropout({c.ptr(x)}, {c.ptr(y)}, {c.ptr(mask)}, {c.size(x)}, {node.attrs['threshold']}u, "
            f"{c.f(node.attrs['scale'])}, {c.rng});")


def emit_predict(node, c):
    """The identity: nothing when the plan put y in x's buffer, else a copy."""
    x, y = c.ptr(node.inputs[0]), c.ptr(node.outputs[0])
    return None if x == y else f"memcpy({y}, {x}, sizeof(float) * {c.size(node.inputs[0])});"


def grad_train(node, g):
    g.give(0, g.op("DropoutGrad", [g.dy(), node.outputs[1]], like=node.inputs[0],
                   attrs={"scale": node.attrs["scale"]}))


def emit_grad(node, c):
    dy, mask = node.inputs
    return f"mt_dropout_grad({c.ptr(dy)}, {c.ptr(mask)}, {c.ptr(node.outputs[0])}, {c.size(dy)}, {c.f(node.attrs['scale'])});"


register("Dropout", kernel=None, emit=None, view=True, grad=view_grad, check=check, training=training)
register_train_op("DropoutTrain", kernel="dropout.h", emit=emit_train, grad=grad_train, inplace=True,
                  emit_predict=emit_predict)
register_train_op("DropoutGrad", kernel="dropout.h", emit=emit_grad, inplace=True)
