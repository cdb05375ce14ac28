"""Convolutional and sensor models exported from PyTorch and trained side by side with it: LeNet-5,
a 1-D CNN over accelerometer windows and a MobileNetV2-style network, trained fully, last layer
only and biases only, with SGD (with and without momentum) and Adam; plus the memory each choice
needs, fused conv updates, `inspect`'s memory per choice and the personalization example.

Both exporters fold eval-mode BatchNorm into the Conv before it (the dynamo exporter names the new
bias `<conv>.weight_bias`); the legacy exporter with TrainingMode.PRESERVE keeps
BatchNormalization (inference form). PyTorch trains the same parameterisation as the ONNX file:
its BN modules are folded into their convs (torch.nn.utils.fusion) when the file has no
BatchNormalization, and every tensor starts from the file's initializers.

Tolerance (float32, 30 steps): each step's loss within 1e-5 relative (+1e-6 absolute) of PyTorch's,
the final weights within 1e-5 absolute (and every case moves some weight by more than 100 times
that, so the check is not vacuous). Our kernels sum in another order than PyTorch's (direct loops
vs im2col/BLAS), so every gradient differs by a few ulp, and momentum, Adam and the depth of the
net carry these differences from step to step; bit equality is not expected. Measured on x86-64
(run with -s): losses within 2.1e-7 relative and weights within 4.1e-7 absolute on every model,
so the bounds leave a 25-50x margin for other compilers and summation orders."""
from __future__ import annotations

import copy
import json
import re
import runpy
from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from typer.testing import CliRunner

from codegen import loader, memory, training
from codegen.cli import app
from helpers import compile_model, export_torch
from test_train_vs_torch import TORCH_OPTIM

STEPS, BATCH = 30, 4
LOSS_RTOL, LOSS_ATOL, WEIGHT_ATOL = 1e-5, 1e-6, 1e-5
ROOT = Path(__file__).resolve().parent.parent


# ---- models ----
def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, dims: int = 2) -> nn.Sequential:
    conv = (nn.Conv1d if dims == 1 else nn.Conv2d)(cin, cout, k, stride, k // 2, groups=groups, bias=False)
    return nn.Sequential(OrderedDict(conv=conv, bn=(nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(cout)))


def with_bn_statistics(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial (pretrained-looking) statistics, scale and bias, so eval
    mode is not the identity and no two initializers are equal (the legacy exporter merges those)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
            for t, lo, hi in ((bn.running_mean, -0.2, 0.2), (bn.running_var, 0.5, 2.0),
                              (bn.weight, 0.5, 1.5), (bn.bias, -0.2, 0.2)):
                t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)
    return model


def lenet(act: str, pool: str) -> nn.Module:
    """LeNet-5 on 1x28x28: conv5(pad 2)-pool-conv5-pool-fc120-fc84-fc10."""
    torch.manual_seed(0)
    a, p = {"relu": nn.ReLU, "tanh": nn.Tanh}[act], {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}[pool]
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), a(), p(2), nn.Conv2d(6, 16, 5), a(), p(2), nn.Flatten(),
                         nn.Linear(400, 120), a(), nn.Linear(120, 84), a(), nn.Linear(84, 10))


def har_cnn() -> nn.Module:
    """A 1-D CNN over a 3-axis accelerometer window of 128 samples, 6 activity classes."""
    torch.manual_seed(0)
    return with_bn_statistics(nn.Sequential(
        conv_bn(3, 16, 5, dims=1), nn.ReLU(), nn.MaxPool1d(2), conv_bn(16, 32, 5, dims=1), nn.ReLU(),
        nn.MaxPool1d(2), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, 6)))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand + 3x3 depthwise (ReLU6) + 1x1 linear projection."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 2):
        super().__init__()
        hidden = cin * expand
        self.expand = nn.Sequential(conv_bn(cin, hidden, 1), nn.ReLU6())
        self.depthwise = nn.Sequential(conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6())
        self.project = conv_bn(hidden, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


def mobilenet() -> nn.Module:
    """MobileNetV2-style on 3x32x32: stem, three inverted residuals (two with the skip Add)."""
    torch.manual_seed(0)
    return with_bn_statistics(nn.Sequential(
        conv_bn(3, 16, 3, 2), nn.ReLU6(), InvertedResidual(16, 16, 1), InvertedResidual(16, 24, 2),
        InvertedResidual(24, 24, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10)))


SAMPLE = {"lenet": ((1, 28, 28), 10), "har": ((3, 128), 6), "mobilenet": ((3, 32, 32), 10),
          "bn_cnn": ((2, 8, 8), 3), "ds_cnn": ((1, 20, 8), 3)}  # the last two: test_train_mode.py


# ---- side by side ----
def fold_bn(model: nn.Module) -> nn.Module:
    """A copy with every conv_bn's BatchNorm folded into its conv, as the exporters do."""
    folded = copy.deepcopy(model).eval()
    for m in folded.modules():
        if isinstance(m, nn.Sequential) and hasattr(m, "bn"):
            m.conv, m.bn = fuse_conv_bn_eval(m.conv, m.bn), nn.Identity()
    return folded


def torch_name(onnx_name: str) -> str:
    return re.sub(r"\.weight_bias$", ".bias", onnx_name)


def load_initializers(model: nn.Module, graph: onnx.GraphProto) -> None:
    """Start PyTorch from the file's exact values (after checking they are the model's, up to the
    rounding of BN folding), so both sides train the same numbers."""
    inits = {torch_name(i.name): numpy_helper.to_array(i) for i in graph.initializer}
    state = model.state_dict()
    assert not set(dict(model.named_parameters())) - set(inits), "a parameter is missing from the ONNX file"
    with torch.no_grad():
        for name in set(state) & set(inits):
            np.testing.assert_allclose(inits[name], state[name].numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
            state[name].copy_(torch.tensor(inits[name]))


def batches(sample: tuple[int, ...], classes: int, steps: int = STEPS):
    rng = np.random.default_rng(42)
    for _ in range(steps):
        yield rng.normal(size=(BATCH, *sample)).astype(np.float32), rng.integers(0, classes, size=BATCH)


def train_side_by_side(tmp_path, model, kind: str, dynamo: bool, keep_bn: bool = False, lr: float = 0.05,
                       optimizer: str = "sgd", **options):
    """Export, compile and train both sides on the same batches; returns the trainer and the
    PyTorch model it was compared with. options: generate() keywords (momentum goes to torch too)."""
    sample, classes = SAMPLE[kind]
    path = export_torch(model, torch.zeros(BATCH, *sample), tmp_path / f"{kind}.onnx", dynamo, keep_bn=keep_bn)
    graph = onnx.load(str(path)).graph
    reference = model if any(n.op_type == "BatchNormalization" for n in graph.node) else fold_bn(model)
    load_initializers(reference, graph)
    reference.train(options.get("mode") == "train")  # generate(mode="train") is PyTorch's train()
    trainer = compile_model(path, tmp_path / "build", loss="cross_entropy", lr=lr, optimizer=optimizer, **options)
    initial = trainer.get_params()
    trainable = {name: torch_name(name) for name in initial}
    params = dict(reference.named_parameters())
    for name, p in params.items():
        p.requires_grad_(name in trainable.values())
    hyper = {k: v for k, v in options.items() if k in ("momentum", "weight_decay")}
    opt = TORCH_OPTIM[optimizer]([params[n] for n in trainable.values()], lr=lr, **hyper)
    loss_err = 0.0
    for step, (x, y) in enumerate(batches(sample, classes)):
        ref = nn.functional.cross_entropy(reference(torch.tensor(x)), torch.tensor(y))
        opt.zero_grad()
        ref.backward()
        opt.step()
        ours = trainer.train_step(x, y)
        loss_err = max(loss_err, abs(ours - ref.item()) / abs(ref.item()))
        assert ours == pytest.approx(ref.item(), rel=LOSS_RTOL, abs=LOSS_ATOL), f"step {step}"
    final = trainer.get_params()
    weight_err = max(float(np.abs(final[n] - params[t].detach().numpy()).max()) for n, t in trainable.items())
    moved = max(float(np.abs(final[n] - initial[n]).max()) for n in trainable)
    print(f"{kind} ({'dynamo' if dynamo else 'legacy'}, {optimizer}, {options}): {len(trainable)} trainable "
          f"tensors moved by up to {moved:.1e}; max relative loss difference {loss_err:.1e}, "
          f"max |weight - torch| {weight_err:.1e}")
    assert weight_err < WEIGHT_ATOL < moved / 100
    return trainer, reference


@pytest.mark.parametrize("act, pool, dynamo, options", [
    ("relu", "max", True, {"momentum": 0.9}),
    ("tanh", "avg", False, {})], ids=["relu-maxpool-dynamo-momentum", "tanh-avgpool-legacy-sgd"])
def test_lenet5(tmp_path, act, pool, dynamo, options):
    train_side_by_side(tmp_path, lenet(act, pool), "lenet", dynamo, **options)


@pytest.mark.parametrize("dynamo, optimizer, lr, options", [
    (True, "adam", 1e-3, {}), (False, "sgd", 0.05, {"momentum": 0.9})],
    ids=["dynamo-folded-bn-adam", "legacy-batchnorm-momentum"])
def test_accelerometer_cnn_1d(tmp_path, dynamo, optimizer, lr, options):
    train_side_by_side(tmp_path, har_cnn(), "har", dynamo, keep_bn=not dynamo, lr=lr, optimizer=optimizer, **options)


@pytest.mark.slow
@pytest.mark.parametrize("dynamo, optimizer, lr, options", [
    (True, "sgd", 0.05, {"momentum": 0.9}), (False, "adam", 1e-3, {})],
    ids=["dynamo-folded-bn-momentum", "legacy-batchnorm-adam"])
def test_mobilenet_full(tmp_path, dynamo, optimizer, lr, options):
    trainer, reference = train_side_by_side(tmp_path, mobilenet(), "mobilenet", dynamo, keep_bn=not dynamo,
                                            lr=lr, optimizer=optimizer, **options)
    assert len(trainer.get_params()) == len(list(reference.parameters()))


def test_mobilenet_last_layer(tmp_path):
    trainer, _ = train_side_by_side(tmp_path, mobilenet(), "mobilenet", True, train_last=1)
    assert list(trainer.get_params()) == ["7.weight", "7.bias"]


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo-conv-biases", "legacy-bn-biases"])
def test_mobilenet_bias_only(tmp_path, dynamo):
    """Biases only: the folded convs' biases (dynamo) or BatchNorm's biases (legacy), plus the
    Linear's; PyTorch trains exactly its bias tensors."""
    trainer, reference = train_side_by_side(tmp_path, mobilenet(), "mobilenet", dynamo, keep_bn=not dynamo,
                                            momentum=0.9, train_bias_only=True)
    biases = {n for n, _ in reference.named_parameters() if n.endswith("bias")}
    assert {torch_name(n) for n in trainer.get_params()} == biases
    assert any(".bn." in n for n in biases) != dynamo


# ---- memory ----
@pytest.fixture(scope="module")
def mobilenet_path(tmp_path_factory):
    return export_torch(mobilenet(), torch.zeros(BATCH, 3, 32, 32), tmp_path_factory.mktemp("m") / "mobilenet.onnx",
                        dynamo=True)


def arena(path, optimizer=training.Optimizer(0.05, 0.9), fuse=True, **selection) -> int:
    tg = training.build(loader.load(path), "cross_entropy", optimizer, selection=training.Selection(**selection),
                        fuse=fuse)
    return memory.plan(tg).arena_bytes


def test_last_layer_needs_less_memory(mobilenet_path):
    full, last, bias = (arena(mobilenet_path, **s) for s in ({}, {"last": 1}, {"bias_only": True}))
    print(f"MobileNet-style, batch {BATCH}, SGD momentum: arena full {full:,} B, last layer {last:,} B, "
          f"bias only {bias:,} B")
    assert last < bias < full


def test_conv_updates_are_fused(tmp_path):
    """Plain SGD is applied by ConvGradW/ConvGradB themselves (no gradient buffer): the same
    losses and weights as separate SGD nodes (1e-6: one multiply-add order differs), a smaller arena."""
    path = export_torch(lenet("relu", "max"), torch.zeros(BATCH, 1, 28, 28), tmp_path / "lenet.onnx", dynamo=True)
    tg = training.build(loader.load(path), "cross_entropy", training.Optimizer(0.05))
    fused_ops = {n.op for n in tg.graph.nodes if n.outputs[0] in tg.fused}
    assert {"ConvGradW", "ConvGradB", "Gemm"} <= fused_ops
    fused, plain = (compile_model(path, tmp_path / str(f), loss="cross_entropy", lr=0.05, fuse_updates=f)
                    for f in (True, False))
    sizes = [t.manifest.memory["arena_bytes"] for t in (fused, plain)]
    print(f"LeNet-5, batch {BATCH}, plain SGD: arena fused {sizes[0]:,} B, unfused {sizes[1]:,} B")
    assert sizes[0] < sizes[1]
    for x, y in batches(*SAMPLE["lenet"]):
        assert fused.train_step(x, y) == pytest.approx(plain.train_step(x, y), rel=1e-6, abs=1e-7)
    for name, value in fused.get_params().items():
        np.testing.assert_allclose(value, plain.get_params()[name], atol=1e-6, err_msg=name)


def test_batchnorm_updates_are_fused(tmp_path):
    path = export_torch(har_cnn(), torch.zeros(BATCH, 3, 128), tmp_path / "har.onnx", dynamo=False, keep_bn=True)
    tg = training.build(loader.load(path), "cross_entropy", training.Optimizer(0.05))
    fused_ops = {n.op for n in tg.graph.nodes if n.outputs[0] in tg.fused}
    assert {"BatchNormalizationGradScale", "BatchNormalizationGradBias"} <= fused_ops


# ---- inspect ----
def test_inspect_reports_memory_per_choice(mobilenet_path):
    result = CliRunner().invoke(app, ["inspect", str(mobilenet_path), "--json", "--optimizer", "adam",
                                      "--train", "7.*"])
    assert result.exit_code == 0, result.output
    choices = {c["choice"]: c for c in json.loads(result.output)["memory_by_choice"]}
    assert list(choices) == ["full training", "--train-last 1", "--train-bias-only", "your choice",
                             "int8, --train-last 1", "int8, your choice"]
    full, last, bias, own, last_int8, own_int8 = choices.values()
    assert last_int8["frozen_bytes"] < last["frozen_bytes"] / 3
    assert last["arena_bytes"] < full["arena_bytes"]
    assert last["param_bytes"] == own["param_bytes"] == 4 * (24 * 10 + 10)
    assert own["optimizer_state_bytes"] == 2 * own["param_bytes"]  # Adam: two moments
    assert bias["param_bytes"] < full["param_bytes"]
    text = CliRunner().invoke(app, ["inspect", str(mobilenet_path), "--train-last", "2"])
    assert text.exit_code == 0, text.output
    assert "--train-bias-only" in text.output and "--train-last 2" in text.output


# ---- the example ----
def test_personalize_example(tmp_path):
    example = runpy.run_path(str(ROOT / "examples" / "personalize_cnn" / "personalize.py"))
    before, after = example["main"](pretrain_epochs=15, finetune_epochs=3, out_dir=str(tmp_path / "ex"))
    assert after > before + 0.2 and after > 0.7  # chance is 0.1
