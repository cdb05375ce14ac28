"""Softplus: y = log(1 + exp(x)) (no attributes; PyTorch's beta = 1). The derivative,
sigmoid(x) = 1 - exp(-y), needs only y."""
from ._unary import register_unary

register_unary("Softplus", "mt_softplus", grad_from="y")
