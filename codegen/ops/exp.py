from ._unary import register_unary

register_unary("Exp", "mt_exp", grad_from="y")  # d exp(x) = exp(x) dx
