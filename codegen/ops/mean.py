from ._variadic import register_sum

register_sum("Mean", mean=True)
