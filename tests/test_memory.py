"""The static memory plan: never two live buffers on the same bytes, and real reuse."""
from __future__ import annotations

import pytest
import torch

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


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_fused_updates_train_like_unfused(tmp_path, mlp_path, weight_decay):
    """SGD folded into the gradient producers: the same losses and weights as the unfused plan
    (tolerance 1e-6: the fused Gemm accumulates -lr * a * b into W in a different order)."""
    import numpy as np

    from helpers import compile_model
    from test_train_vs_torch import batches

    fused, plain = (compile_model(mlp_path, tmp_path / str(f), loss="cross_entropy", lr=0.05,
                                  weight_decay=weight_decay, fuse_updates=f) for f in (True, False))
    assert fused.manifest["memory"]["arena_bytes"] < plain.manifest["memory"]["arena_bytes"]
    print(f"arena: fused {fused.manifest['memory']['arena_bytes']} B, "
          f"unfused {plain.manifest['memory']['arena_bytes']} B")
    for x, y in batches("cross_entropy", 20):
        assert fused.train_step(x, y) == pytest.approx(plain.train_step(x, y), rel=1e-6, abs=1e-7)
    for name, value in fused.get_params().items():
        np.testing.assert_allclose(value, plain.get_params()[name], atol=1e-6)
