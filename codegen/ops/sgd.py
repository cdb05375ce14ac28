"""SGD update of one parameter, in place: inputs (W, dW[, momentum buffer]).
The learning rate is a run-time variable of the generated C (settable), not an attribute."""
from . import register_train_op


def emit(node, c):
    w, dw = node.inputs[:2]
    buf = c.ptr(node.inputs[2]) if len(node.inputs) > 2 else "NULL"
    a = node.attrs
    return (f"mt_sgd({c.ptr(w)}, {c.ptr(dw)}, {buf}, {c.size(w)}, {c.lr}, {c.f(a['momentum'])}, "
            f"{c.f(a['weight_decay'])}, {int(a['nesterov'])});")


register_train_op("SGD", kernel="sgd.h", emit=emit)
