from . import attr
from ._unary import register_unary


def _alpha(node) -> float:
    return attr(node, "alpha", 0.01)


# For alpha >= 0, y > 0 exactly where x > 0, so the gradient can use the output.
register_unary("LeakyRelu", "mt_leaky_relu", grad_from=lambda node: "y" if _alpha(node) >= 0 else "x",
               params=lambda node, c: f", {c.f(_alpha(node))}")
