from ._broadcast import register_binary
from .sum_to import reduce_to


def grad(node, g):
    for i in (0, 1):
        if g.needs(i):
            g.give(i, reduce_to(g, g.dy(), node.inputs[i]))


register_binary("Add", "mt_add", grad, bias_inputs=(0, 1))
