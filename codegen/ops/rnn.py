"""RNN (ONNX spec, tanh): h = tanh(x W^T + h R^T + Wb + Rb); its backward reads h from Y, no trace."""
from ._recurrent import Cell, register_recurrent

register_recurrent(Cell("RNN", gates=1, trace=0, activations=("Tanh",), states=1))
