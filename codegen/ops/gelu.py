"""Gelu (opset 20): approximate "none" (x * Phi(x), through erf) or "tanh" (PyTorch's
approximate="tanh"). The derivative needs x."""
from . import attr, invalid
from ._unary import register_unary

APPROXIMATIONS = ("none", "tanh")


def _approximate(node) -> str:
    value = attr(node, "approximate", "none")
    return value.decode() if isinstance(value, bytes) else value


def check(node, graph):
    if _approximate(node) not in APPROXIMATIONS:
        raise invalid(node, f"approximate={_approximate(node)!r} (one of {', '.join(APPROXIMATIONS)})")


register_unary("Gelu", "mt_gelu", grad_from="x", check=check,
               params=lambda node, c: f", {APPROXIMATIONS.index(_approximate(node))}")
