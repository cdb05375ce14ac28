"""Tied parameters: torch's legacy exporter merges a fresh model's equal initializers (the two
LayerNorms' unit scales and zero biases), which would then train as one tensor. generate warns
naming every group; untie=True gives each use its own copy (under PyTorch's names, which the
legacy exporter keeps on Identity nodes), trains like PyTorch, and export writes the untied graph."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

import codegen
from codegen.cli import app
from codegen.errors import McutrainWarning
from helpers import export_torch
from test_train_vs_torch import BATCH, train_side_by_side


def fresh() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.LayerNorm(16), torch.nn.ReLU(),
                               torch.nn.Linear(16, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 10))


def test_warns_naming_every_group(tmp_path):
    path = export_torch(fresh(), torch.zeros(BATCH, 64), tmp_path / "m.onnx", dynamo=False)
    with pytest.warns(McutrainWarning, match=r"2 parameter\(s\) are read by several nodes") as caught:
        summary = codegen.generate(path, tmp_path / "b", loss="cross_entropy")
    message = str(caught[0].message)
    assert "'1.weight' (2 uses" in message and "as '4.weight'" in message and "as '4.bias'" in message
    assert "4.weight" not in [p["name"] for p in summary["params"]]
    result = CliRunner().invoke(app, ["generate", str(path), "-o", str(tmp_path / "c"), "--loss", "cross_entropy"])
    assert result.exit_code == 0 and "warning: 2 parameter(s)" in result.output
    result = CliRunner().invoke(app, ["generate", str(path), "-o", str(tmp_path / "d"), "--loss", "cross_entropy",
                                      "--untie"])
    assert result.exit_code == 0 and "warning" not in result.output and "4.weight" in result.output


def test_untie_trains_like_torch_and_exports(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime checks the exported model")
    model = fresh()
    with warnings.catch_warnings():
        warnings.simplefilter("error", McutrainWarning)  # an untied model warns no more
        trainer, _ = train_side_by_side(tmp_path, model, dynamo=False, untie=True, momentum=0.9, weight_decay=1e-3)
    assert {"1.weight", "1.bias", "4.weight", "4.bias"} <= set(trainer.get_params())
    trainer.export_onnx(tmp_path / "trained.onnx")
    exported = onnx.load(str(tmp_path / "trained.onnx"))
    assert not [n for n in exported.graph.node if n.op_type == "Identity"]
    x = np.random.default_rng(7).normal(size=(BATCH, 64)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "trained.onnx"))
    ours = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(ours, model(torch.tensor(x)).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_one_node_reading_a_parameter_twice_unties(tmp_path):
    """One fresh BatchNorm: the exporter merges its zero bias and zero running mean into one
    initializer read in two slots of the same node; --mode train needs its own running mean,
    which untie gives it (before, untie only split uses by several nodes and the refusal's advice
    did not help)."""
    from codegen.errors import UnsupportedError
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten())
    path = export_torch(model, torch.zeros(2, 1, 5, 5), tmp_path / "m.onnx", dynamo=False, keep_bn=True)
    with pytest.warns(McutrainWarning, match="'1.bias' \\(2 uses"), pytest.raises(UnsupportedError, match="--untie"):
        codegen.generate(path, tmp_path / "b", mode="train")
    summary = codegen.generate(path, tmp_path / "b", mode="train", untie=True)
    assert sorted(s["name"] for s in summary["state"]) == ["1.running_mean", "1.running_var"]
