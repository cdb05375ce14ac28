"""BatchNormalization: y = scale * (x - mean) / sqrt(var + eps) + B per channel (axis 1).

Inference form (generate --mode eval, training_mode=0): mean/var are the running statistics,
constants; gradients flow to X, scale and B only.

Batch statistics (../shared/DECISIONS.md §5): under --mode train (PyTorch's model.train()) and
for nodes exported with training_mode=1 the node becomes BatchNormalizationTrain: it normalises
with the batch's mean and biased variance, backpropagates through them and updates the running
statistics, which become RAM state (role RUNNING: the blob's state section). Both rules weight
the new value by 1 - momentum (ONNX's momentum weights the old one; torch's exporter writes
1 - torch's momentum); the running variance takes the unbiased batch variance under --mode train
(PyTorch) and the population one for training_mode=1 nodes (the ONNX spec). predict uses the
running statistics, except in training_mode=1 nodes, whose output is defined by the batch."""
from math import prod

from ..ir import CONST, RUNNING, TRAIN_DOMAIN
from . import attr, refuse, register, register_train_op


def check(node, graph):
    if len(graph.shape(node.inputs[0])) < 2:
        raise refuse(node, "BatchNormalization of an input with fewer than 2 dimensions")
    if any(node.outputs[1:]) and not attr(node, "training_mode", 0):
        raise refuse(node, "BatchNormalization's running mean/var outputs without training_mode=1")


def training(node, graph, train: bool):
    """Switch to batch statistics: the running statistics (inputs 3, 4) become RAM state updated
    in place, outputs 1, 2 (ONNX's running mean/var outputs) become the batch mean and biased
    variance the backward reads."""
    spec = bool(attr(node, "training_mode", 0))
    if not (train or spec):
        return
    shape = graph.shape(node.inputs[0])
    per_channel = prod(shape) // shape[1]
    if per_channel < 2:
        raise refuse(node, f"BatchNormalization with batch statistics over {per_channel} value per channel "
                     f"(input {shape}): it needs batch x spatial size > 1 (PyTorch refuses it too); use a "
                     "larger --batch or --mode eval")
    readers = [n for n in graph.nodes if n is not node for i in n.inputs if i in node.inputs[3:5]]
    if any(i in node.outputs[1:] for n in graph.nodes for i in n.inputs if i):
        raise refuse(node, "reading BatchNormalization's running mean/var outputs")
    for name in node.inputs[3:5]:
        t = graph.tensors[name]
        if t.role != CONST or readers or node.inputs[3] == node.inputs[4]:
            raise refuse(node, f"batch statistics when the running statistic '{name}' is not a constant of "
                         "its own (the legacy exporter merges equal initializers: generate with --untie)")
        t.role = RUNNING
    c = shape[1]
    saved = [graph.add(f"{node.outputs[0]}.batch_{k}", (c,)) for k in ("mean", "var")]
    for old in node.outputs[1:]:
        if old:
            del graph.tensors[old]
    node.outputs[1:] = saved
    node.attrs = {"epsilon": float(attr(node, "epsilon", 1e-5)), "new_weight": 1.0 - float(attr(node, "momentum", 0.9)),
                  "unbiased": int(not spec), "batch_in_predict": int(spec)}
    node.op, node.domain = "BatchNormalizationTrain", TRAIN_DOMAIN


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
    _param_grads(g, x, scale, bias, mean, var, eps)


def _param_grads(g, x, scale, bias, mean, var, eps):
    """Scale and bias gradients: the same sums whether mean/var are running or batch statistics."""
    if g.needs(1):
        g.give(1, g.op("BatchNormalizationGradScale", [g.dy(), x, mean, var], like=scale, attrs=eps))
    if g.needs(2):
        g.give(2, g.op("BatchNormalizationGradBias", [g.dy()], like=bias))


def grad_train(node, g):
    """Through the batch statistics: dx = a * (dy - mean(dy) - xhat * mean(dy * xhat)) per channel."""
    x, scale, bias = node.inputs[:3]
    mean, var = node.outputs[1:3]
    eps = {"epsilon": node.attrs["epsilon"]}
    if g.needs(0):
        g.give(0, g.op("BatchNormalizationTrainGradX", [g.dy(), x, scale, mean, var], like=x, attrs=eps))
    _param_grads(g, x, scale, bias, mean, var, eps)


def emit_train(node, c, update: bool = True):
    """Batch statistics to outputs 1, 2, y; the running statistics updated when `update`."""
    shape = c.shape(node.inputs[0])
    a = node.attrs
    args = [c.ptr(t) for t in node.inputs[:5]] + [c.ptr(t) for t in node.outputs[:3]] + [
        shape[0], shape[1], prod(shape[2:]), c.f(a["epsilon"]), c.f(a["new_weight"] if update else 0.0),
        a["unbiased"]]
    return f"mt_batchnorm_train({', '.join(map(str, args))});"


_inference = _emitter("mt_batchnorm")


def emit_train_predict(node, c):
    """predict: the running statistics (PyTorch's eval()), or the batch's for training_mode=1
    nodes, without touching the running statistics."""
    if node.attrs["batch_in_predict"]:
        return emit_train(node, c, update=False)
    return _inference(node, c)


register("BatchNormalization", kernel="batchnorm.h", emit=_inference, grad=grad,
         diff_inputs=(0, 1, 2), bias_inputs=(2,), check=check, inplace=True, training=training)
register_train_op("BatchNormalizationTrain", kernel="batchnorm.h", emit=emit_train, grad=grad_train,
                  diff_inputs=(0, 1, 2), bias_inputs=(2,), inplace=True, emit_predict=emit_train_predict)
register_train_op("BatchNormalizationGradX", kernel="batchnorm.h", emit=_emitter("mt_batchnorm_grad_x"),
                  inplace=True)
register_train_op("BatchNormalizationTrainGradX", kernel="batchnorm.h",
                  emit=_emitter("mt_batchnorm_train_grad_x"), inplace=True)
_grad_scale = _emitter("mt_batchnorm_grad_scale", update=True)
_grad_bias = _emitter("mt_channel_sum", with_eps=False, update=True)
register_train_op("BatchNormalizationGradScale", kernel="batchnorm.h", emit=_grad_scale, emit_update=_grad_scale)
register_train_op("BatchNormalizationGradBias", kernel="channel_sum.h", emit=_grad_bias, emit_update=_grad_bias)
