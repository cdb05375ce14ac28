from ._broadcast import register_binary
from .sum_to import reduce_to


def grad(node, g):
    """y = a / b: da = dy / b, db = -(dy / b) * y."""
    a, b = node.inputs
    y = node.outputs[0]
    dy_over_b = g.op("Div", [g.dy(), b], like=y, domain="")
    if g.needs(0):
        g.give(0, reduce_to(g, dy_over_b, a))
    if g.needs(1):
        g.give(1, reduce_to(g, g.op("Mul", [dy_over_b, y], like=y, domain=""), b, scale=-1.0))


register_binary("Div", "mt_div", grad)
