from ._unary import register_unary

register_unary("Relu", "mt_relu", grad_from="x")
