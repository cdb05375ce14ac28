from ._unary import register_unary

register_unary("Reciprocal", "mt_reciprocal", grad_from="y")  # d (1 / x) = -dx / x^2 = -y^2 dx
