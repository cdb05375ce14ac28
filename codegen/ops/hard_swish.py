"""HardSwish: y = x * max(0, min(1, x / 6 + 1/2)); no attributes."""
from ._unary import register_unary

register_unary("HardSwish", "mt_hard_swish", grad_from="x")
