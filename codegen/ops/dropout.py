"""Dropout in inference mode: the identity. Training-mode dropout is refused."""
from . import invalid, refuse, register
from ._layout import scalar
from .view import view_grad


def check(node, graph):
    if len(node.outputs) > 1 and node.outputs[1]:
        raise refuse(node, "using Dropout's mask output")
    ratio = scalar(node, graph, 1, "ratio")
    if ratio is not None and not 0 <= ratio < 1:
        raise invalid(node, f"a dropout ratio of {ratio} (outside [0, 1))")
    if len(node.inputs) > 2 and node.inputs[2]:
        mode = graph.tensors[node.inputs[2]].value
        if mode is None or bool(mode):
            raise refuse(node, "Dropout in training mode (export the model with model.eval())")


register("Dropout", kernel=None, emit=None, view=True, grad=view_grad, check=check)
