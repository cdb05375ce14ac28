from . import register
from .view import view_grad

register("Identity", kernel=None, emit=None, view=True, grad=view_grad)
