"""A one-layer transformer encoder classifier (nn.TransformerEncoderLayer: d_model 16, 2 heads,
feed-forward 32, sequence 8, batch_first; mean or first-token pooling -> Linear) exported by both
of torch's exporters and trained side by side with PyTorch: 30 steps of SGD with momentum and
weight decay. What the exporters emit: batched MatMul (3-D by 2-D, 4-D by 4-D), Softmax on the
last axis, Transpose, Reshape, Gather of q/k/v (and of the first token), Mul by the scale,
LayerNormalization, Gemm, ReduceMean; the legacy one also Shape/Slice/Cast/Sqrt chains (folded);
dynamo at opset 23 writes the attention as one ONNX Attention node.

The parameters are randomised before export: a fresh model's equal initializers would be merged
(see test_tied.py), and the dynamo exporter drops a zero bias altogether. The dynamo exporter
names some weights val_<k> (transposed copies): they are matched to PyTorch's by value, and its
attention scale (an initializer of shape [1]) is frozen, as PyTorch has no parameter for it.
The dynamo exporter's scale is one initializer that both the q and the k Mul read, so generate
warns that it is tied. Tolerance (float32): each loss within 1e-5 relative of PyTorch's, final weights within 2e-5."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import codegen
from helpers import classify_alongside, compile_model, export_torch

STEPS, BATCH, SEQ, D, CLASSES = 30, 4, 8, 16, 4


class Classifier(torch.nn.Module):
    def __init__(self, pool: str):
        super().__init__()
        self.enc = torch.nn.TransformerEncoderLayer(D, 2, 32, dropout=0.1, batch_first=True)
        self.head = torch.nn.Linear(D, CLASSES)
        self.pool = pool

    def forward(self, x):
        h = self.enc(x)
        return self.head(h.mean(1) if self.pool == "mean" else h[:, 0])


def randomised(pool: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = Classifier(pool)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.rand_like(p) * 0.4 + (0.8 if "norm" in name and name.endswith("weight") else -0.2))
    return model


def match(path, model) -> tuple[dict[str, tuple[str, bool]], list[str]]:
    """ONNX initializer -> (PyTorch parameter, transposed) by value, and the float initializers
    that are no PyTorch parameter."""
    params = {n: p.detach().numpy() for n, p in model.named_parameters()}
    found, others = {}, []
    for init in onnx.load(str(path)).graph.initializer:
        v = numpy_helper.to_array(init)
        hit = next(((n, t) for n, p in params.items() for t in (False, True)
                    if (p.T if t else p).shape == v.shape and np.array_equal(p.T if t else p, v)), None)
        if hit:
            found[init.name] = hit
        elif v.dtype == np.float32 and v.ndim:
            others.append(init.name)
    return found, others


@pytest.mark.filterwarnings("ignore::codegen.errors.McutrainWarning")
def export(model, path, exporter: str):
    if exporter != "dynamo-opset23":
        return export_torch(model, torch.zeros(BATCH, SEQ, D), path, dynamo=exporter == "dynamo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(BATCH, SEQ, D),), str(path), dynamo=True, opset_version=23)
    assert "Attention" in {n.op_type for n in onnx.load(str(path)).graph.node}
    return path


@pytest.mark.parametrize("pool, exporter", [("mean", "dynamo"), ("first", "legacy"),
                                            pytest.param("mean", "dynamo-opset23", marks=pytest.mark.slow)],
                         ids=["mean-dynamo", "first-legacy", "mean-dynamo-opset23"])
def test_transformer_classifier(tmp_path, pool, exporter):
    """Each exporter once (the other pooling with the other exporter: the encoder is the same)."""
    model = randomised(pool)
    path = export(model, tmp_path / "t.onnx", exporter)
    found, others = match(path, model)
    hyper = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}
    # -O0: a quarter of the -O3 build time; IEEE arithmetic (-ffp-contract=off) gives the same numbers
    trainer = compile_model(path, tmp_path / "build", ["-O0"], loss="cross_entropy", freeze=others or None, **hyper)
    assert set(trainer.get_params()) == set(found)
    assert {n for n, _ in found.values()} == {n for n, _ in model.named_parameters()}
    model.eval()  # dropout off, as exported; gradients flow as in training
    opt = torch.optim.SGD(model.parameters(), **hyper)
    worst = classify_alongside(trainer, model, opt, (BATCH, SEQ, D), CLASSES, STEPS, seed=3)
    params = dict(model.named_parameters())
    final = trainer.get_params()
    err = max(float(np.abs(final[n] - (params[p].T if t else params[p]).detach().numpy()).max())
              for n, (p, t) in found.items())
    print(f"max relative |loss - torch| over {STEPS} steps: {worst:.2e}; max |weight - torch|: {err:.2e}")
    assert err < 2e-5
    if exporter == "legacy":  # `mcutrain inspect` knows every op and plans each trainable set
        report = codegen.inspect(path)
        assert not report.unsupported and all(row.error is None for row in report.memory_by_choice)
