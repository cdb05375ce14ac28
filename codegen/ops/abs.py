from ._unary import register_unary

register_unary("Abs", "mt_abs", grad_from="x")  # d |x| = sign(x) dx, 0 at 0 as PyTorch
