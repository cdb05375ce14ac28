from ._unary import gradient, register_unary
from .mask import masked

_from_y = gradient("Relu", "y")  # y > 0 exactly where x > 0: the gradient needs only the output


def grad(node, g):
    """From y when the backward keeps y anyway (the next layer's weight gradient reads it), else
    from a 1-bit mask of y > 0, so y need not outlive the forward pass (frozen layers after it)."""
    y = node.outputs[0]
    if g.kept(y):
        _from_y(node, g)
    else:
        g.give(0, masked(g, y, "PositiveMask"))


register_unary("Relu", "mt_relu", grad_from="y", grad=grad)
