"""LSTM (ONNX spec, no peepholes): i, o, f, c gates; cell state c, h = o tanh(c)."""
from ._recurrent import Cell, register_recurrent

register_recurrent(Cell("LSTM", gates=4, trace=5, activations=("Sigmoid", "Tanh", "Tanh"), states=2))
