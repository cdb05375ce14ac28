"""Floating-point operations of one training step, counted on the training graph the C is
lowered from: 2 per multiply-add in the dense ops (Gemm, MatMul, Conv and their gradients), one
per output element elsewhere (activations, losses, updates: a lower bound)."""
from __future__ import annotations

from math import prod

from codegen import loader, training

DENSE = {"Conv", "ConvGradX", "ConvGradW"}


def _node_flops(node, g) -> int:
    out = prod(g.shape(node.outputs[0])) if node.outputs and node.outputs[0] in g.tensors else 0
    if node.op == "Gemm":
        return 2 * out * g.shape(node.inputs[0])[0 if node.attrs.get("transA", 0) else 1]
    if node.op == "MatMul":
        return 2 * out * g.shape(node.inputs[0])[-1]
    if node.op == "MatMulGrad":  # as many multiply-adds as the forward MatMul
        dy, other = (g.shape(i) for i in node.inputs)
        return 2 * prod(dy) * other[-2 if node.attrs["wrt"] == 0 else -1]
    if node.op in DENSE:  # each output pixel of the forward conv: one multiply-add per weight tap
        dy = g.shape(node.outputs[0] if node.op == "Conv" else node.inputs[0])
        w = g.shape(node.outputs[0] if node.op == "ConvGradW" else node.inputs[1])
        return 2 * prod(dy) * prod(w[1:])
    return out


def per_step(model, loss: str, batch: int | None = None) -> int:
    tg = training.build(loader.load(model, batch), loss, training.Optimizer())
    return sum(_node_flops(n, tg.graph) for n in tg.graph.nodes)
