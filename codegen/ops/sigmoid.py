from ._unary import register_unary

register_unary("Sigmoid", "mt_sigmoid", grad_from="y")
