"""Dropout in inference mode: the identity. Training-mode dropout is refused."""
from . import refuse, register
from .view import view_grad


def check(node, graph):
    if len(node.outputs) > 1 and node.outputs[1]:
        raise refuse(node, "using Dropout's mask output")
    if len(node.inputs) > 2 and node.inputs[2]:
        mode = graph.tensors[node.inputs[2]].value
        if mode is None or bool(mode):
            raise refuse(node, "Dropout in training mode (export the model with model.eval())")


register("Dropout", kernel=None, emit=None, view=True, grad=view_grad, check=check)
