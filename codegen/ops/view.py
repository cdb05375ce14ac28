"""View: the gradient of the reshaping ops. Same bytes as its input under another shape."""
from . import register_train_op


def view_grad(node, g):
    """Gradient rule shared by every op whose output is a view of input 0."""
    g.give(0, g.op("View", [g.dy()], like=node.inputs[0]))


register_train_op("View", kernel=None, emit=None, view=True)
