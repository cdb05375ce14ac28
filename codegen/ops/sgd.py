"""SGD update of one parameter, in place: inputs (W, dW[, momentum buffer]).
The learning rate is a run-time variable of the generated C (settable), not an attribute.

Fused form (the gradient is never stored): without momentum the gradient's producer writes
W = (1 - lr * wd) * W - lr * g; with momentum it writes buf = momentum * buf + g and this op then
only applies buf += wd * W; W -= lr * buf. Nesterov needs g itself, so it is not fused."""
from . import register_optimizer, register_train_op
from ._layout import optional_ptr


def emit(node, c):
    w, dw = node.inputs[:2]
    buf = optional_ptr(c, node, 2)
    a = node.attrs
    return (f"mt_sgd({c.ptr(w)}, {c.ptr(dw)}, {buf}, {c.size(w)}, {c.lr}, {c.f(a['momentum'])}, "
            f"{c.f(a['weight_decay'])}, {int(a['nesterov'])});")


def fuse_into(node) -> str | None:
    if node.attrs["nesterov"]:
        return None
    return node.inputs[2] if len(node.inputs) > 2 else node.inputs[0]


def emit_fused(node, c):
    decay = node.attrs["weight_decay"]
    if len(node.inputs) == 2:
        return f"(-{c.lr})", (f"(1.0f - {c.lr} * {c.f(decay)})" if decay else "1.0f"), None
    w, _, buf = node.inputs
    rest = f"mt_sgd_apply({c.ptr(w)}, {c.ptr(buf)}, {c.size(w)}, {c.lr}, {c.f(decay)});"
    return "1.0f", c.f(node.attrs["momentum"]), rest


register_train_op("SGD", kernel="sgd.h", emit=emit, fuse_into=fuse_into, emit_fused=emit_fused)
register_optimizer("sgd", "SGD", ("momentum", "nesterov", "weight_decay"),
                   state=lambda o: ["momentum"] if o.momentum else [],
                   attrs=lambda o: {"momentum": o.momentum, "weight_decay": o.weight_decay, "nesterov": int(o.nesterov)})
