from ._variadic import register_sum

register_sum("Sum", mean=False)
