"""The static memory plan: never two live buffers on the same bytes, and real reuse."""
from __future__ import annotations

import onnx
import pytest
import torch

import codegen
from codegen import loader, memory, training
from helpers import export_torch
from test_train_vs_torch import mlp


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory):
    return export_torch(mlp("relu"), torch.zeros(16, 64), tmp_path_factory.mktemp("m") / "mlp.onnx", dynamo=True)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("train", [None, ["2.*"]], ids=["full", "last-layer"])
def test_plan_is_valid_and_reuses_memory(mlp_path, momentum, train):
    tg = training.build(loader.load(mlp_path), "cross_entropy", training.Optimizer(0.1, momentum),
                        selection=training.Selection(train=train))
    plan = memory.plan(tg)  # plan() validates every plan it makes
    memory.validate(plan)
    print(f"MLP 64-32-10, batch 16, train={train}: arena {plan.arena_bytes} B, "
          f"sum of all activation+gradient buffers {plan.naive_bytes} B")
    assert plan.arena_bytes < plan.naive_bytes


def test_partial_training_needs_less_memory(mlp_path):
    full, last = (memory.plan(training.build(loader.load(mlp_path), "cross_entropy", training.Optimizer(),
                                             selection=training.Selection(train=t))) for t in (None, ["2.*"]))
    print(f"arena: full {full.arena_bytes} B, last layer only {last.arena_bytes} B")
    assert last.arena_bytes < full.arena_bytes


def test_validator_catches_overlap(mlp_path):
    plan = memory.plan(training.build(loader.load(mlp_path), "cross_entropy", training.Optimizer()))
    a, b = sorted(plan.buffers.values(), key=lambda x: x.start)[:2]  # live together: b reads a
    b.offset = a.offset
    with pytest.raises(AssertionError, match="overlap"):
        memory.validate(plan)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_fused_updates_train_like_unfused(tmp_path, mlp_path, weight_decay, momentum):
    """SGD (with and without momentum) folded into the gradient producers: the same losses and
    weights as the unfused plan (tolerance 1e-6: the fused kernels add in a different order)."""
    import numpy as np

    from helpers import compile_model
    from test_train_vs_torch import batches

    fused, plain = (compile_model(mlp_path, tmp_path / str(f), loss="cross_entropy", lr=0.05,
                                  weight_decay=weight_decay, momentum=momentum, fuse_updates=f)
                    for f in (True, False))
    assert fused.manifest.memory["arena_bytes"] < plain.manifest.memory["arena_bytes"]
    print(f"arena: fused {fused.manifest.memory['arena_bytes']} B, "
          f"unfused {plain.manifest.memory['arena_bytes']} B")
    for x, y in batches("cross_entropy", 20):
        assert fused.train_step(x, y) == pytest.approx(plain.train_step(x, y), rel=1e-6, abs=1e-7)
    for name, value in fused.get_params().items():
        np.testing.assert_allclose(value, plain.get_params()[name], atol=1e-6)


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    """4 micro-batches of 4 == one batch of 16 (float32 tolerance 1e-5: the sum is regrouped),
    with less arena."""
    import numpy as np

    from helpers import compile_model
    from test_train_vs_torch import batches

    path = export_torch(mlp("tanh"), torch.zeros(4, 64), tmp_path / "dyn.onnx", dynamo=True, batch_dynamic=True)
    options = dict(loss="cross_entropy", lr=0.05, momentum=0.9)
    full = compile_model(path, tmp_path / "full", batch=16, **options)
    micro = compile_model(path, tmp_path / "micro", batch=4, accumulate=4, **options)
    assert micro.train_batch == 16 and micro.batch == 4
    print(f"arena: batch 16 {full.manifest.memory['arena_bytes']} B, "
          f"4 x 4 accumulated {micro.manifest.memory['arena_bytes']} B")
    assert micro.manifest.memory["arena_bytes"] < full.manifest.memory["arena_bytes"]
    for x, y in batches("cross_entropy", 10):
        assert micro.train_step(x, y) == pytest.approx(full.train_step(x, y), rel=1e-5)
    for name, value in micro.get_params().items():
        np.testing.assert_allclose(value, full.get_params()[name], atol=1e-5)


def test_ram_budget_names_sizes_and_options(tmp_path, mlp_path):
    from typer.testing import CliRunner

    from codegen.cli import app

    args = ["generate", str(mlp_path), "-o", str(tmp_path / "out"), "--loss", "cross_entropy", "--momentum", "0.9",
            "--no-federated"]
    result = CliRunner().invoke(app, args + ["--ram-budget", "20000"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and not (tmp_path / "out").exists(), text
    for needle in ("needs 24,032 B", "--ram-budget is 20,000 B", "arena", "--train-last 1", "(fits)"):
        assert needle in text
    assert CliRunner().invoke(app, args + ["--ram-budget", "40000"]).exit_code == 0
    federated = CliRunner().invoke(app, args[:-1] + ["--ram-budget", "30000"])
    assert federated.exit_code == 2 and "round-start copy 9,640 B" in " ".join(federated.output.split())


def test_report_json_and_plot(tmp_path, mlp_path):
    import json

    from typer.testing import CliRunner

    from codegen.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["generate", str(mlp_path), "-o", str(tmp_path / "b"), "--loss", "mse"]).exit_code == 0
    result = runner.invoke(app, ["report", str(tmp_path / "b"), "--json", "--plot", str(tmp_path / "t.png")])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["lower_bound_bytes"] <= info["arena_bytes"] <= info["naive_bytes"]
    assert max(info["live_bytes"]) == info["lower_bound_bytes"]
    for key in ("param_bytes", "optimizer_state_bytes", "const_bytes", "frozen_bytes"):
        assert key in info
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    text = runner.invoke(app, ["report", str(tmp_path / "b")]).output
    assert "lower bound" in text


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("choice", ["full", "last", "bias", "momentum"])
@pytest.mark.parametrize("suite", ["mlp", "lenet5", "cnn1d", "mobilenet"])
def test_arena_within_5_percent_of_lower_bound(tmp_path, suite, choice, batch):
    from benchmarks.models import LR, SUITE
    from codegen import api

    model = next(s for s in SUITE if s.name == suite)
    selection = {"last": training.Selection(last=1), "bias": training.Selection(bias_only=True)}.get(
        choice, training.Selection())
    spec = api.Spec(model.loss, training.Optimizer(LR, 0.9 if choice == "momentum" else 0.0), selection)
    _, _, plan = api.compile_plan(model.export(batch, tmp_path / "m.onnx"), spec)
    print(f"{suite} batch {batch} {choice}: arena {plan.arena_bytes} B, lower bound {plan.lower_bound} B, "
          f"naive {plan.naive_bytes} B ({plan.order})")
    assert plan.lower_bound <= plan.arena_bytes <= 1.05 * plan.lower_bound


def test_plan_is_deterministic(mlp_path):
    plans = [memory.plan(training.build(loader.load(mlp_path), "cross_entropy", training.Optimizer(0.1, 0.9)))
             for _ in range(2)]
    assert plans[0].to_json() == plans[1].to_json()


def test_frozen_relu_layers_keep_1_bit_masks(tmp_path):
    """Bias-only training through frozen conv layers: each ReLU's backward keeps a 1-bit mask of
    y > 0 (the frozen convolutions' dX needs only the weights), not its float output, so the
    arena holds a few activations, not one per layer (a DS-CNN: 320 KB -> 72 KB)."""
    layers = [torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU()]
    for _ in range(4):
        layers += [torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(8 * 16 * 16, 4))
    path = export_torch(net, torch.zeros(1, 1, 16, 16), tmp_path / "m.onnx", dynamo=False)
    summary = codegen.generate(path, tmp_path / "b", loss="cross_entropy", train_bias_only=True)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "b" / "training_model.onnx")).graph.node]
    assert ops.count("PositiveMask") == 5 and "ReluGrad" not in ops
    activation = 8 * 16 * 16 * 4
    assert summary["memory"]["arena_bytes"] <= 3 * activation + 5 * activation // 32
