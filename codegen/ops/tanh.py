from ._unary import register_unary

register_unary("Tanh", "mt_tanh", grad_from="y")
