from ._unary import register_unary

register_unary("Log", "mt_log", grad_from="x")  # d log(x) = dx / x
