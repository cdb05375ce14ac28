"""SumTo: the gradient of broadcasting. Sums a gradient over the dimensions its input was
broadcast along, so it gets the input's shape; `scale` folds in a constant factor (e.g. -1)."""
from . import register_train_op
from ._broadcast import strides_over
from ._layout import ints


def reduce_to(g, grad: str, target: str, scale: float = 1.0) -> str:
    """The gradient `grad` (of an op's output) brought to the shape of input `target`."""
    if g.shape(grad) == g.shape(target) and scale == 1.0:
        return grad
    return g.op("SumTo", [grad], like=target, attrs={"scale": float(scale)})


def emit(node, c, scale="1.0f", keep="0.0f"):
    x, y = node.inputs[0], node.outputs[0]
    shape = c.shape(x)
    factor = f"{scale} * {c.f(node.attrs['scale'])}"
    if _leading_rows(c.shape(y), shape):
        return f"mt_sum_rows({c.ptr(x)}, {c.ptr(y)}, {c.size(x) // c.size(y)}, {c.size(y)}, {factor}, {keep});"
    return (f"mt_sum_to({c.ptr(x)}, {c.ptr(y)}, {c.size(y)}, {len(shape)}, {ints(c, shape)}, "
            f"{ints(c, strides_over(c.shape(y), shape))}, {c.size(x)}, {factor}, {keep});")


def _leading_rows(y_shape, x_shape) -> bool:
    """y is x summed over leading dims only: x's trailing dims are y's (padded with 1s in front)."""
    kept = tuple(y_shape)
    while kept and kept[0] == 1:
        kept = kept[1:]
    return not kept or tuple(x_shape[len(x_shape) - len(kept):]) == kept


register_train_op("SumTo", kernel="sum_to.h", emit=emit, emit_update=emit)
