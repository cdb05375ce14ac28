from ._broadcast import register_binary
from .sum_to import reduce_to


def grad(node, g):
    a, b = node.inputs
    y = node.outputs[0]
    for i, other in ((0, b), (1, a)):
        if g.needs(i):
            g.give(i, reduce_to(g, g.op("Mul", [g.dy(), other], like=y, domain=""), node.inputs[i]))


register_binary("Mul", "mt_mul", grad)
