"""ReduceMax: the gradient goes to the inputs equal to the maximum, split evenly among ties (as
torch.amax, DECISIONS §5); NaN propagates."""
from ._reduce import register_grouped

register_grouped("ReduceMax", "MT_REDUCE_MAX")
