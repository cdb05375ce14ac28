from ._unary import register_unary

register_unary("Erf", "mt_erf", grad_from="x")
