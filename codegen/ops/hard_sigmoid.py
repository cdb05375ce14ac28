"""HardSigmoid: y = max(0, min(1, alpha * x + beta)); ONNX defaults alpha 0.2, beta 0.5
(PyTorch's hardsigmoid is alpha = 1/6)."""
from . import attr
from ._unary import register_unary

register_unary("HardSigmoid", "mt_hard_sigmoid", grad_from="x",
               params=lambda node, c: f", {c.f(attr(node, 'alpha', 0.2))}, {c.f(attr(node, 'beta', 0.5))}")
