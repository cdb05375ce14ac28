"""Adam / AdamW update of one parameter, in place: inputs (W, dW, exp_avg, exp_avg_sq).
The learning rate and the step count (for bias correction) are run-time variables of the C; FedProx
adds mu * (W - W_round) to the gradient first, as in SGD."""
from . import register_optimizer, register_train_op
from .sgd import prox


def emit(node, c):
    w, dw, m, v = node.inputs
    a = node.attrs
    return prox(node, c, dw) + (f"mt_adam({c.ptr(w)}, {c.ptr(dw)}, {c.ptr(m)}, {c.ptr(v)}, {c.size(w)}, {c.lr}, "
            f"{c.f(a['beta1'])}, {c.f(a['beta2'])}, {c.f(a['eps'])}, {c.f(a['weight_decay'])}, "
            f"{int(a['decoupled'])}, {c.step});")


register_train_op("Adam", kernel="adam.h", emit=emit)
for _name in ("adam", "adamw"):  # AdamW: the same op with decoupled weight decay
    register_optimizer(_name, "Adam", ("beta1", "beta2", "eps", "weight_decay"),
                       state=lambda o: ["exp_avg", "exp_avg_sq"],
                       attrs=lambda o: {"beta1": o.beta1, "beta2": o.beta2, "eps": o.eps,
                                        "weight_decay": o.weight_decay, "decoupled": int(o.kind == "adamw")})
