"""ReduceSum (axes as input since opset 13): a SumTo; the gradient broadcasts dy back (_reduce.py)."""
from ._reduce import register_summing

register_summing("ReduceSum", mean=False)
