"""The ONNX model-zoo light graphs (onnx_node_data.light_data: weights made by ConstantOfShape,
which folding turns into parameters): every one is supported and planned (DenseNet-121: 678
buffers), `inspect` reports the ones whose report is cheap fully supported with a memory plan,
and the C forward of the ones that build fast matches the reference output onnx ships (rtol 1e-4,
atol 1e-7). `python -m benchmarks.model_zoo` runs inspect and the forward of all nine, with
timings; without a package index the cases skip with the reason."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import codegen
from benchmarks.model_zoo import ATOL, MODELS, RTOL, forward, reference, sample
from codegen import api, training
from onnx_node_data import Unavailable, light_data

# inspect's int8 row evaluates the whole network at 224x224 with onnx's Python reference
# evaluator: 9-20 CPU seconds for Inception v1/v2 (their pools) and VGG-19, left to the benchmark;
# DenseNet-121 (10 s) stays, the planner's scale test.
INSPECT = ("bvlc_alexnet", "densenet121", "resnet50", "shufflenet", "squeezenet", "zfnet512")
# Built and run in CI: the ones whose C builds in about 5 CPU seconds (benchmarks/README.md has all nine).
FORWARD = ("shufflenet", "squeezenet")


@pytest.fixture(scope="module")
def folder() -> Path:
    try:
        return light_data()
    except Unavailable as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("name", MODELS)
def test_supported_and_planned(folder, name):
    """Full training of every light graph plans: parameters from the folded weights, a valid arena."""
    spec = api.Spec("mse", training.Optimizer(), training.Selection())
    graph, tg, plan = api.compile_plan(folder / f"light_{name}.onnx", spec)
    assert tg.trainable and plan.lower_bound <= plan.arena_bytes <= plan.naive_bytes
    if name == "densenet121":  # the planner's scale test
        assert len(plan.buffers) > 600


@pytest.mark.parametrize("name", INSPECT)
def test_inspect(folder, name):
    report = codegen.inspect(folder / f"light_{name}.onnx")
    assert report.unsupported == [] and report.params
    full = report.memory_by_choice[0]
    assert full.choice == "full training" and full.error is None and full.memory["arena_bytes"] > 0


@pytest.mark.parametrize("name", FORWARD)
def test_forward_matches_reference_and_trains(folder, tmp_path, name):
    model = folder / f"light_{name}.onnx"
    trainer, y, _ = forward(model, tmp_path / "out")
    np.testing.assert_allclose(y, reference(model), rtol=RTOL, atol=ATOL)
    before = trainer.get_params()
    target = np.zeros_like(y)
    target[:, 0] = 1
    assert np.isfinite(trainer.train_step(sample(model), target))
    after = trainer.get_params()
    assert any(not np.array_equal(before[n], after[n]) for n in before)
