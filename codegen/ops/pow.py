"""Pow with a constant scalar exponent e (a float or integer initializer or Constant, any shape
of one element: torch exports x ** 2 and x ** 0.5 so): y = x^e. A computed or non-scalar exponent
is refused. The gradient flows to the base only: dx = dy * e * x^(e - 1), from x; PowGrad gets
the exponent as its third input."""
from . import refuse
from ._layout import constant
from ._unary import register_unary


def exponent(node, graph) -> float:
    """Pow's input 1, PowGrad's input 2: the last input."""
    value = constant(node, graph, len(node.inputs) - 1, "exponent")
    if value.size != 1:
        raise refuse(node, f"an exponent of shape {list(value.shape)} (only a single constant exponent)")
    return float(value.reshape(-1)[0])


register_unary("Pow", "mt_pow", grad_from="x", check=lambda node, graph: exponent(node, graph),
               params=lambda node, c: f", {c.f(exponent(node, c.tg.graph))}")
