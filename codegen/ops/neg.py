"""Neg: y = -x; its gradient is Neg of dy, so no tensor of the forward pass stays alive."""
from ._unary import register_unary


def grad(node, g):
    g.give(0, g.op("Neg", [g.dy()], like=node.inputs[0], domain=""))


register_unary("Neg", "mt_neg", grad_from=None, grad=grad)
