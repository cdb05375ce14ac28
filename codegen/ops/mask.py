"""1-bit masks of where a gradient passes: computed in the forward pass (GradContext.save), so the
backward keeps 1 bit per element instead of the activation. QuantizedMask: an int8 output not at
a bound (its quantizer saturated or a folded ReLU/Clip cut there); PositiveMask: a ReLU's output
above zero; InsideMask: a Clip's output strictly between its bounds."""
from . import register_train_op


def masked(g, y: str, mask_op: str, *bounds: str) -> str:
    """d loss / d (y before the cut), given g.dy() for y: dy where mask_op(y, *bounds) is set."""
    return g.op("MaskedGrad", [g.dy(), g.save(mask_op, [y, *bounds])], like=y)


def _emit_mask(fn: str):
    return lambda node, c: f"{fn}({c.ptr(node.inputs[0])}, {c.ptr(node.outputs[0])}, {c.size(node.inputs[0])});"


def emit_masked(node, c):
    dy, mask = node.inputs
    return f"mt_masked({c.ptr(dy)}, {c.ptr(mask)}, {c.ptr(node.outputs[0])}, {c.size(dy)});"


register_train_op("QuantizedMask", kernel="mask.h", emit=_emit_mask("mt_mask_s8"))
register_train_op("PositiveMask", kernel="mask.h", emit=_emit_mask("mt_mask_positive"))


def emit_inside(node, c):
    y, bounds = node.inputs[0], [c.ptr(b) if b else "NULL" for b in (node.inputs + ["", ""])[1:3]]
    return f"mt_mask_inside({c.ptr(y)}, {c.ptr(node.outputs[0])}, {c.size(y)}, {', '.join(bounds)});"


register_train_op("InsideMask", kernel="mask.h", emit=emit_inside)
register_train_op("MaskedGrad", kernel="mask.h", emit=emit_masked, inplace=True)
