"""SGD update of one parameter, in place: inputs (W, dW[, momentum buffer]).
The learning rate is a run-time variable of the generated C (settable), not an attribute.

Fused form (the gradient is never stored): without momentum the gradient's producer writes
W = (1 - lr * wd) * W - lr * g; with momentum it writes buf = momentum * buf + g and this op then
only applies buf += wd * W; W -= lr * buf. Nesterov needs g itself, so it is not fused.

FedProx (federated builds, mu from <prefix>_set_prox_mu, 0 = off) adds mu * (W - W_round) to g
before all that; fused without momentum, the producer scales W by (1 - lr * wd - lr * mu) and
lr * mu * W_round is added after.

A parameter that trains on its integers (--update int8: int8 weights, int32 biases; attribute
integer=1; its gradient in integer steps, ops/qas.py) takes the same step rounded stochastically
and saturated (mt_sgd_s8 / mt_sgd_s32, the Dropout stream's xorshift32). Fused (plain SGD) the
QAS kernel takes it on the integers; with momentum it is not fused. FedProx's term reaches float
parameters only."""
from . import register_optimizer, register_train_op
from ._layout import optional_ptr
from ._qlinear import BIAS_LIMIT


def prox(node, c, target: str) -> str:
    """Federated builds: target += mu * (W - W_round) when mu != 0 (the proximal gradient)."""
    if c.prox_mu is None:
        return ""
    w = node.inputs[0]
    return (f"if ({c.prox_mu} != 0.0f) mt_prox({c.ptr(target)}, {c.ptr(w)}, {c.round_start(w)}, "
            f"{c.size(w)}, {c.prox_mu});\n")


def emit(node, c):
    w, dw = node.inputs[:2]
    buf = optional_ptr(c, node, 2)
    a = node.attrs
    dtype = c.tg.graph.tensors[w].dtype
    if dtype != "float32":
        fn, limit = ("mt_sgd_s8", "") if dtype == "int8" else ("mt_sgd_s32", f"{BIAS_LIMIT}, ")
        return (f"{fn}({c.ptr(w)}, {c.ptr(dw)}, {buf}, {c.size(w)}, {c.lr}, {c.f(a['momentum'])}, "
                f"{c.f(a['weight_decay'])}, {int(a['nesterov'])}, {limit}{c.rng});")
    return prox(node, c, dw) + (f"mt_sgd({c.ptr(w)}, {c.ptr(dw)}, {buf}, {c.size(w)}, {c.lr}, {c.f(a['momentum'])}, "
            f"{c.f(a['weight_decay'])}, {int(a['nesterov'])});")


def fuse_into(node) -> str | None:
    if node.attrs["nesterov"] or node.attrs.get("integer") and len(node.inputs) > 2:
        return None
    return node.inputs[2] if len(node.inputs) > 2 else node.inputs[0]


def emit_fused(node, c):
    decay = node.attrs["weight_decay"]
    w = node.inputs[0]
    if len(node.inputs) == 2:
        if c.prox_mu is None or node.attrs.get("integer"):
            return f"(-{c.lr})", (f"(1.0f - {c.lr} * {c.f(decay)})" if decay else "1.0f"), None
        keep = f"(1.0f - {c.lr} * {c.f(decay)} - {c.lr} * {c.prox_mu})" if decay else f"(1.0f - {c.lr} * {c.prox_mu})"
        shift = (f"if ({c.prox_mu} != 0.0f) mt_prox_shift({c.ptr(w)}, {c.round_start(w)}, {c.size(w)}, "
                 f"{c.lr} * {c.prox_mu});")
        return f"(-{c.lr})", keep, shift
    buf = node.inputs[2]
    rest = prox(node, c, buf) + f"mt_sgd_apply({c.ptr(w)}, {c.ptr(buf)}, {c.size(w)}, {c.lr}, {c.f(decay)});"
    return "1.0f", c.f(node.attrs["momentum"]), rest


register_train_op("SGD", kernel="sgd.h", emit=emit, fuse_into=fuse_into, emit_fused=emit_fused)
register_optimizer("sgd", "SGD", ("momentum", "nesterov", "weight_decay"),
                   state=lambda o: ["momentum"] if o.momentum else [],
                   attrs=lambda o: {"momentum": o.momentum, "weight_decay": o.weight_decay, "nesterov": int(o.nesterov)})
