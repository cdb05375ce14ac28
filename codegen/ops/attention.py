"""Attention (opset 23), what torch's dynamo exporter writes for scaled_dot_product_attention at
opset 23: Y = softmax(scale * Q K^T) V over 4-D (batch, heads, sequence, features) Q, K, V, one
kernel (runtime_c/kernels/attention.h). The attention weights P are kept for the backward as
the node's output 3 (qk_matmul_output in mode 3: after the softmax), planned like any
activation; the gradients are MatMuls and a SoftmaxGrad. Masks, causal masking, past key/values,
grouped-query heads, 3-D inputs and softcap are refused."""
from math import sqrt

from . import attr, refuse, register
from .sum_to import reduce_to

QK_OUTPUT = 3
AFTER_SOFTMAX = 3  # qk_matmul_output_mode: output 3 is the softmax's


def _scale(node, shapes) -> float:
    """The `scale` attribute, by default 1 / sqrt(features); `shapes`: anything with .shape(name)."""
    return float(attr(node, "scale", 1.0 / sqrt(shapes.shape(node.inputs[0])[-1])))


def check(node, graph):
    if any(node.inputs[3:]):
        raise refuse(node, "Attention with attn_mask or past_key/past_value inputs")
    shapes = [graph.shape(i) for i in node.inputs[:3]]
    if any(len(s) != 4 for s in shapes):
        raise refuse(node, "Attention on 3-D inputs (q_num_heads/kv_num_heads; give 4-D Q, K, V)")
    if len({s[1] for s in shapes}) > 1:
        raise refuse(node, "grouped-query Attention (fewer K/V heads than Q heads)")
    if attr(node, "is_causal", 0) or attr(node, "softcap", 0.0):
        raise refuse(node, "Attention with is_causal or softcap")
    if any(node.outputs[1:]):
        raise refuse(node, "Attention's present_key/present_value/qk_matmul_output outputs")
    (b, h, s, _), (_, _, l, _) = shapes[:2]
    node.outputs.extend([""] * (QK_OUTPUT + 1 - len(node.outputs)))
    node.outputs[QK_OUTPUT] = graph.add(f"{node.outputs[0]}/attention_weights", (b, h, s, l))
    node.attrs["qk_matmul_output_mode"] = AFTER_SOFTMAX


def emit(node, c):
    q, k, v = node.inputs[:3]
    b, h, s, d = c.shape(q)
    l, dv = c.shape(v)[2:]
    return (f"mt_attention({c.ptr(q)}, {c.ptr(k)}, {c.ptr(v)}, {c.ptr(node.outputs[0])}, "
            f"{c.ptr(node.outputs[QK_OUTPUT])}, {b * h}, {s}, {l}, {d}, {dv}, "
            f"{c.f(_scale(node, c))});")


def grad(node, g):
    """With S = scale * Q K^T, P = softmax(S), Y = P V: dV = P^T dY, dP = dY V^T, dS from the
    softmax's gradient, dQ = scale * dS K, dK = scale * dS^T Q."""
    q, k, v = node.inputs[:3]
    p, dy = node.outputs[QK_OUTPUT], g.dy()
    if g.needs(2):
        g.give(2, g.op("MatMulGrad", [dy, p], like=v, attrs={"wrt": 1}))
    if not (g.needs(0) or g.needs(1)):
        return
    dp = g.op("MatMulGrad", [dy, v], like=p, attrs={"wrt": 0})
    ds = reduce_to(g, g.op("SoftmaxGrad", [dp, p], like=p, attrs={"axis": -1}), p, _scale(node, g))
    if g.needs(0):
        g.give(0, g.op("MatMul", [ds, k], like=q, domain=""))
    if g.needs(1):
        g.give(1, g.op("MatMulGrad", [q, ds], like=k, attrs={"wrt": 1}))


register("Attention", kernel="attention.h", emit=emit, grad=grad, diff_inputs=(0, 1, 2), check=check)
