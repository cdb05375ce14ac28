"""GRU (ONNX spec; linear_before_reset 1, as PyTorch exports it, or 0): z, r, n gates,
h = (1 - z) n + z h."""
from ._recurrent import Cell, register_recurrent

register_recurrent(Cell("GRU", gates=3, trace=4, activations=("Sigmoid", "Tanh"), states=1))
