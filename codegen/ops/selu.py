"""Selu: y = gamma * x for x > 0, gamma * alpha * (exp(x) - 1) otherwise (ONNX defaults: the
self-normalising constants, as torch.selu). Shares its kernel with Elu (gamma = 1)."""
from . import attr
from ._unary import register_unary

ALPHA, GAMMA = 1.67326319217681884765625, 1.05070102214813232421875


def register_elu_family(name: str, alpha, gamma) -> None:
    """alpha, gamma: node -> value. The gradient reads y when alpha >= 0 and gamma > 0 (then y > 0
    exactly where x > 0, and dy/dx = y + alpha * gamma below), so the op runs in place; else x."""

    def from_y(node) -> bool:
        return alpha(node) >= 0 and gamma(node) > 0

    def params(node, c) -> str:
        return f", {c.f(alpha(node))}, {c.f(gamma(node))}"

    register_unary(name, "mt_elu", grad_from=lambda node: "y" if from_y(node) else "x", params=params,
                   grad_params=lambda node, c: f"{params(node, c)}, {int(from_y(node))}")


register_elu_family("Selu", alpha=lambda node: attr(node, "alpha", ALPHA), gamma=lambda node: attr(node, "gamma", GAMMA))
