"""Pow with a constant exponent (an initializer or Constant of any float or integer type; torch
exports x ** 2 and x ** 0.5 with a one-value one): y = x^e, e one value or a tensor repeating
along the base's leading dimensions (x's trailing dims, numpy broadcasting that keeps x's shape),
read by the kernel as a static float array. A computed exponent, or one that broadcasts otherwise,
is refused. The gradient flows to the base only: dx = dy * e * x^(e - 1), from x; PowGrad gets the
exponent as its last input."""
import numpy as np

from . import refuse
from ._layout import constant
from ._unary import register_unary


def exponent(node, graph) -> np.ndarray:
    """Pow's input 1, PowGrad's input 2 (the last input), as float32 values."""
    return np.asarray(constant(node, graph, len(node.inputs) - 1, "exponent"), np.float32)


def check(node, graph):
    e = exponent(node, graph)
    base, out = tuple(graph.shape(node.inputs[0])), tuple(graph.shape(node.outputs[0]))
    pattern = e.shape[next((d for d, n in enumerate(e.shape) if n != 1), e.ndim):]  # e without leading 1s
    if np.prod(out) != np.prod(base) or (pattern and base[len(base) - len(pattern):] != pattern):
        raise refuse(node, f"an exponent of shape {list(e.shape)} for a base of shape {list(base)} (supported: one "
                           "exponent, or exponents repeating along the base's leading dimensions)")


register_unary("Pow", "mt_pow", grad_from="x", check=check,
               params=lambda node, c: f", {c.floats(exponent(node, c.tg.graph).ravel())}, "
                                      f"{exponent(node, c.tg.graph).size}")
