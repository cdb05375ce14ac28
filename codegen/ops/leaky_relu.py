from . import attr
from ._unary import register_unary

register_unary("LeakyRelu", "mt_leaky_relu", grad_from="x",
               params=lambda node, c: f", {c.f(attr(node, 'alpha', 0.01))}")
