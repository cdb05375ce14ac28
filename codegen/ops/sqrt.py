from ._unary import register_unary

register_unary("Sqrt", "mt_sqrt", grad_from="y")  # d sqrt(x) = dx / (2 sqrt(x))
