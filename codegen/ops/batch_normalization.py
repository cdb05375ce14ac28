"""BatchNormalization in inference form: y = scale * (x - mean) / sqrt(var + eps) + B per channel
(axis 1). The running statistics (inputs 3, 4) are constants: gradients flow to X, scale and B only,
and training_mode=1 (batch statistics) is refused."""
from math import prod

from . import attr, refuse, register, register_train_op


def check(node, graph):
    if attr(node, "training_mode", 0):
        raise refuse(node, "BatchNormalization with training_mode=1 (export the model with model.eval())")
    if any(node.outputs[1:]):
        raise refuse(node, "BatchNormalization's running mean/var outputs (training mode)")
    if len(graph.shape(node.inputs[0])) < 2:
        raise refuse(node, "BatchNormalization of an input with fewer than 2 dimensions")


def _emitter(fn: str, with_eps: bool = True, update: bool = False):
    """Emit `fn(inputs..., output, n, c, inner[, eps][, scale, keep])`; input 0 (x or dy) has the
    (N, C, ...) shape. `update`: the kernel stores keep * output + scale * result (emit_update)."""
    def emit(node, c, scale="1.0f", keep="0.0f"):
        shape = c.shape(node.inputs[0])
        args = [c.ptr(t) for t in node.inputs] + [c.ptr(node.outputs[0]), shape[0], shape[1], prod(shape[2:])]
        if with_eps:
            args.append(c.f(attr(node, "epsilon", 1e-5)))
        if update:
            args += [scale, keep]
        return f"{fn}({', '.join(map(str, args))});"
    return emit


def grad(node, g):
    x, scale, bias, mean, var = node.inputs[:5]
    eps = {"epsilon": float(attr(node, "epsilon", 1e-5))}
    if g.needs(0):
        g.give(0, g.op("BatchNormalizationGradX", [g.dy(), scale, var], like=x, attrs=eps))
    if g.needs(1):
        g.give(1, g.op("BatchNormalizationGradScale", [g.dy(), x, mean, var], like=scale, attrs=eps))
    if g.needs(2):
        g.give(2, g.op("BatchNormalizationGradBias", [g.dy()], like=bias))


register("BatchNormalization", kernel="batchnorm.h", emit=_emitter("mt_batchnorm"), grad=grad,
         diff_inputs=(0, 1, 2), bias_inputs=(2,), check=check, inplace=True)
register_train_op("BatchNormalizationGradX", kernel="batchnorm.h", emit=_emitter("mt_batchnorm_grad_x"),
                  inplace=True)
_grad_scale = _emitter("mt_batchnorm_grad_scale", update=True)
_grad_bias = _emitter("mt_channel_sum", with_eps=False, update=True)
register_train_op("BatchNormalizationGradScale", kernel="batchnorm.h", emit=_grad_scale, emit_update=_grad_scale)
register_train_op("BatchNormalizationGradBias", kernel="channel_sum.h", emit=_grad_bias, emit_update=_grad_bias)
