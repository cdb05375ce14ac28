from ._unary import register_unary

# y > 0 exactly where x > 0: the gradient needs only the output.
register_unary("Relu", "mt_relu", grad_from="y")
