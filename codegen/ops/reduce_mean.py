"""ReduceMean: a SumTo scaled by 1 / count; the gradient broadcasts dy / count back (_reduce.py)."""
from ._reduce import register_summing

register_summing("ReduceMean", mean=True)
