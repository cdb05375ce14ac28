"""LayerNormalization (opset 17): the dims from `axis` on are normalised together, per row of the
dims before it, then scaled and shifted by Scale and the optional B. The forward kernel stores
each row's mean and inverse standard deviation (the optional Mean/InvStdDev outputs): for
training they are kept for the backward as outputs of the node, so the gradients need no second
pass over the statistics. Gradients flow to X, Scale and B; not back through Mean/InvStdDev."""
from math import prod

from . import attr, invalid, refuse, register, register_train_op
from ._layout import optional_ptr
from .sum_to import reduce_to


def _strip(shape) -> tuple[int, ...]:
    """A shape without its leading 1s (those broadcast away)."""
    shape = tuple(shape)
    while shape and shape[0] == 1:
        shape = shape[1:]
    return shape


def check(node, graph):
    shape = graph.shape(node.inputs[0])
    axis = attr(node, "axis", -1)
    if not -len(shape) <= axis < len(shape):
        raise invalid(node, f"axis={axis} for an input of rank {len(shape)}")
    if attr(node, "stash_type", 1) != 1:
        raise refuse(node, f"stash_type={attr(node, 'stash_type')} (statistics in float32: stash_type=1)")
    for slot, what in ((1, "Scale"), (2, "B")):
        if slot < len(node.inputs) and node.inputs[slot] and \
                _strip(graph.shape(node.inputs[slot])) != _strip(shape[axis:]):
            raise refuse(node, f"{what} of shape {list(graph.shape(node.inputs[slot]))} broadcast within the "
                               f"normalised shape {list(shape[axis:])} (give it that shape)")


def _rows(node, c) -> str:
    """`outer, n`: the rows and the values normalised together, from X's shape."""
    shape = c.shape(node.inputs[0] if node.domain == "" else node.inputs[1])
    axis = attr(node, "axis", -1) % len(shape)
    return f"{prod(shape[:axis])}, {prod(shape[axis:])}"


def emit(node, c):
    x, scale = node.inputs[:2]
    stats = [c.ptr(o) if o else "NULL" for o in (node.outputs + ["", ""])[1:3]]
    return (f"mt_layernorm({c.ptr(x)}, {c.ptr(scale)}, {optional_ptr(c, node, 2)}, {c.ptr(node.outputs[0])}, "
            f"{', '.join(stats)}, {_rows(node, c)}, {c.f(attr(node, 'epsilon', 1e-5))});")


def grad(node, g):
    if g.needs(0) and any(g.dy(k) for k in (1, 2) if k < len(node.outputs) and node.outputs[k]):
        raise refuse(node, "a gradient through LayerNormalization's Mean/InvStdDev outputs")
    x, scale = node.inputs[:2]
    shape = g.shape(x)
    axis = attr(node, "axis", -1) % len(shape)
    stats_shape = shape[:axis] + (1,) * (len(shape) - axis)
    mean, inv_std = g.output(1, stats_shape), g.output(2, stats_shape)
    rows = {"axis": axis}
    if g.needs(0):
        g.give(0, g.op("LayerNormalizationGradX", [g.dy(), x, scale, mean, inv_std], like=x, attrs=rows))
    if g.needs(1):
        g.give(1, g.op("LayerNormalizationGradScale", [g.dy(), x, mean, inv_std], like=scale, attrs=rows))
    if g.needs(2):
        g.give(2, reduce_to(g, g.dy(), node.inputs[2]))


def _emit_grad(fn: str, update: bool = False):
    """`fn(inputs..., output, outer, n[, s, keep])`; `update`: the kernel stores keep * output +
    s * result (emit_update)."""
    def emit_grad(node, c, scale="1.0f", keep="0.0f"):
        args = ", ".join(c.ptr(t) for t in node.inputs + node.outputs)
        return f"{fn}({args}, {_rows(node, c)}{f', {scale}, {keep}' if update else ''});"
    return emit_grad


register("LayerNormalization", kernel="layernorm.h", emit=emit, grad=grad, diff_inputs=(0, 1, 2),
         bias_inputs=(2,), check=check, inplace=True)
register_train_op("LayerNormalizationGradX", kernel="layernorm.h", emit=_emit_grad("mt_layernorm_grad_x"),
                  inplace=True)
_grad_scale = _emit_grad("mt_layernorm_grad_scale", update=True)
register_train_op("LayerNormalizationGradScale", kernel="layernorm.h", emit=_grad_scale, emit_update=_grad_scale)
