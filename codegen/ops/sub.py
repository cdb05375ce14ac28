from ._broadcast import register_binary
from .sum_to import reduce_to


def grad(node, g):
    for i, sign in ((0, 1.0), (1, -1.0)):
        if g.needs(i):
            g.give(i, reduce_to(g, g.dy(), node.inputs[i], scale=sign))


register_binary("Sub", "mt_sub", grad, bias_inputs=(0, 1))
