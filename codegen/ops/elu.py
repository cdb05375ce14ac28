"""Elu: y = x for x > 0, alpha * (exp(x) - 1) otherwise (ONNX default alpha 1.0); the kernel is
Selu's with gamma = 1."""
from . import attr
from .selu import register_elu_family

register_elu_family("Elu", alpha=lambda node: attr(node, "alpha", 1.0), gamma=lambda node: 1.0)
