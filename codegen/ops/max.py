from ._variadic import register_extreme

register_extreme("Max", "mt_vmax")
