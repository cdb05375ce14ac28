"""Cast: training runs in float32, so only float32 -> float32 (the exporters' no-op casts), a view
of its input; any other type is refused."""
from onnx import TensorProto

from . import attr, refuse, register
from .view import view_grad


def check(node, graph):
    to, given = attr(node, "to"), graph.tensors[node.inputs[0]].dtype
    if to != TensorProto.FLOAT or given != "float32":
        target = TensorProto.DataType.Name(to).lower() if to in TensorProto.DataType.values() else to
        raise refuse(node, f"Cast from {given} to {target} (only float32 to float32: training runs in float32)")


register("Cast", kernel=None, emit=None, view=True, grad=view_grad, check=check)
