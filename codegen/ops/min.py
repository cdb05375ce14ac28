from ._variadic import register_extreme

register_extreme("Min", "mt_vmin")
