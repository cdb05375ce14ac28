"""Whole models trained side by side with PyTorch: same initial weights, same 50 batches.

Tolerance (float32): each step's loss within 1e-5 relative (+1e-6 absolute) of PyTorch's, and
the final weights within 2e-5 absolute. Our kernels sum in a different order than PyTorch's BLAS,
so bit equality is not expected; the differences seen are a few ulp."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from helpers import compile_model, export_torch

STEPS, BATCH = 50, 16


def mlp(act: str) -> torch.nn.Module:
    torch.manual_seed(0)
    layer = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[act]
    return torch.nn.Sequential(torch.nn.Linear(64, 32), layer(), torch.nn.Linear(32, 10))


def batches(loss: str, steps: int = STEPS):
    rng = np.random.default_rng(42)
    for _ in range(steps):
        x = rng.normal(size=(BATCH, 64)).astype(np.float32)
        if loss == "cross_entropy":
            y = rng.integers(0, 10, size=BATCH)
        else:
            y = rng.uniform(size=(BATCH, 10)).astype(np.float32)
        yield x, y


TORCH_LOSS = {"cross_entropy": torch.nn.functional.cross_entropy,
              "mse": torch.nn.functional.mse_loss,
              "bce_with_logits": torch.nn.functional.binary_cross_entropy_with_logits}


TORCH_OPTIM = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def train_side_by_side(tmp_path, model, loss="cross_entropy", dynamo=True, lr=0.05, optimizer="sgd",
                       **options):
    """options: generate() keywords; the optimizer ones are passed to torch.optim too."""
    path = export_torch(model, torch.zeros(BATCH, 64), tmp_path / "mlp.onnx", dynamo=dynamo)
    trainer = compile_model(path, tmp_path / "build", loss=loss, lr=lr, optimizer=optimizer, **options)
    trainable = list(trainer.get_params())
    params = dict(model.named_parameters())
    for name, p in params.items():
        p.requires_grad_(name in trainable)
    hyper = {k: v for k, v in options.items() if k in ("momentum", "weight_decay", "nesterov")}
    if "beta1" in options:
        hyper["betas"] = (options["beta1"], options.get("beta2", 0.999))
    opt = TORCH_OPTIM[optimizer]([params[n] for n in trainable], lr=lr, **hyper)
    worst = 0.0
    for step, (x, y) in enumerate(batches(loss)):
        ref = TORCH_LOSS[loss](model(torch.tensor(x)), torch.tensor(y))
        opt.zero_grad()
        ref.backward()
        opt.step()
        ours = trainer.train_step(x, y)
        worst = max(worst, abs(ours - ref.item()))
        assert ours == pytest.approx(ref.item(), rel=1e-5, abs=1e-6), f"step {step}"
    final = trainer.get_params()
    weight_err = max(float(np.abs(final[n] - params[n].detach().numpy()).max()) for n in trainable)
    print(f"max |loss - torch| over {STEPS} steps: {worst:.2e}; max |weight - torch|: {weight_err:.2e}")
    assert weight_err < 2e-5
    return trainer, path


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_mlp_sgd(tmp_path, act, dynamo):
    train_side_by_side(tmp_path, mlp(act), dynamo=dynamo)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
def test_mlp_momentum_weight_decay(tmp_path, dynamo):
    train_side_by_side(tmp_path, mlp("relu"), dynamo=dynamo, momentum=0.9, weight_decay=1e-3)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
def test_mlp_last_layer_only(tmp_path, dynamo):
    model = mlp("tanh")
    first = model[0].weight.detach().clone()
    trainer, _ = train_side_by_side(tmp_path, model, dynamo=dynamo, train=["2.*"], momentum=0.5)
    assert list(trainer.get_params()) == ["2.weight", "2.bias"]
    assert torch.equal(model[0].weight, first)
    # No gradient is computed for the frozen layer, nor for the input of the trainable one's prefix.
    graph = onnx.load(str(tmp_path / "build" / "training_model.onnx")).graph
    assert not any(n.op_type == "TanhGrad" for n in graph.node)
    source = (tmp_path / "build" / "mlp.c").read_text()
    assert "static const float mlp_frozen" in source


@pytest.mark.parametrize("loss", ["mse", "bce_with_logits"])
def test_mlp_other_losses(tmp_path, loss):
    train_side_by_side(tmp_path, mlp("relu"), loss=loss, lr=0.1)


@pytest.mark.parametrize("optimizer, options", [
    ("adam", {}), ("adam", {"weight_decay": 1e-2, "beta1": 0.8, "beta2": 0.99}),
    ("adamw", {"weight_decay": 0.05}), ("sgd", {"momentum": 0.9, "nesterov": True})],
    ids=["adam", "adam-l2-betas", "adamw", "sgd-nesterov"])
def test_mlp_optimizers(tmp_path, optimizer, options):
    lr = 0.05 if optimizer == "sgd" else 1e-3
    train_side_by_side(tmp_path, mlp("relu"), lr=lr, optimizer=optimizer, **options)


@pytest.mark.parametrize("options, expected", [
    ({"train_last": 1}, ["2.weight", "2.bias"]),
    ({"train_bias_only": True}, ["0.bias", "2.bias"]),
    ({"train_last": 1, "train_bias_only": True}, ["2.bias"]),
    ({"freeze": ["*.bias"]}, ["0.weight", "2.weight"])], ids=["last1", "bias-only", "last-bias", "freeze"])
def test_trainable_shortcuts(tmp_path, options, expected):
    trainer, _ = train_side_by_side(tmp_path, mlp("relu"), momentum=0.9, **options)
    assert list(trainer.get_params()) == expected
