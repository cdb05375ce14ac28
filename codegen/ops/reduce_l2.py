"""ReduceL2: y = sqrt(sum of x^2) over the axes; dx = x * dy / y, 0 where y = 0 (as PyTorch's
vector_norm)."""
from ._reduce import register_grouped

register_grouped("ReduceL2", "MT_REDUCE_L2")
