"""What QuantizeLinear and DequantizeLinear share: per-tensor parameters of an activation."""
from . import refuse


def check_activation(node, graph):
    """Constant weights and biases were turned into parameters (codegen/quantized.py); what is
    left quantizes activations, one scale and zero point per tensor."""
    for slot in (1, 2):
        name = node.inputs[slot] if slot < len(node.inputs) else ""
        if name and graph.tensors[name].size != 1:
            raise refuse(node, f"a per-axis {('scale', 'zero point')[slot - 1]} ('{name}') on an activation")
    if node.attrs.get("block_size", 0):
        raise refuse(node, "blocked quantization (block_size)")


def scale_zp(c, scale: str, zero_point: str) -> str:
    """The kernels' scale and zero point arguments (codegen/quantized.py gives every Q/DQ node an
    explicit zero point)."""
    return f"{c.f(float(c.value(scale).ravel()[0]))}, {int(c.value(zero_point).ravel()[0])}"
