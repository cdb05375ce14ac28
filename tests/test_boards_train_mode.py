"""`--mode train` on a board: BatchNormalization with batch statistics (and its running-statistics
update) and active Dropout (the xorshift32 stream) train under QEMU as they do in the cffi host
build, within the board tolerances of test_boards.py (the mask stream is integer arithmetic, so
the same seed drops the same units on both)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

import codegen
from helpers import export_torch
from test_boards import BATCH, clusters, host_training, need, train_on


@pytest.fixture(scope="module")
def bn_dropout_model(tmp_path_factory):
    """Conv 3x3 + BatchNorm + ReLU + MaxPool + Dropout(0.25) + Linear on the clusters as 1x8x8
    images (the exporter drops an eval-mode Dropout: it is put back before the Gemm; untie: the
    exporter merges the fresh BatchNorm's equal zero bias and running mean)."""
    tmp = tmp_path_factory.mktemp("train_mode")
    x, y = clusters(64)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 4))
    model = onnx.load(export_torch(net, torch.zeros(BATCH, 1, 8, 8), tmp / "bn.onnx", dynamo=False, keep_bn=True))
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    model.graph.initializer.append(numpy_helper.from_array(np.array(0.25, np.float32), "ratio"))
    dropout = helper.make_node("Dropout", [gemm.input[0], "ratio"], ["dropped"])
    gemm.input[0] = "dropped"
    model.graph.node.insert(list(model.graph.node).index(gemm), dropout)
    onnx.save(model, tmp / "bn.onnx")
    codegen.generate(tmp / "bn.onnx", tmp / "bn", loss="cross_entropy", lr=0.05, mode="train", untie=True)
    return tmp / "bn", x.reshape(-1, 1, 8, 8), y


def test_train_mode_on_cortex_m4f_matches_host(bn_dropout_model):
    need("cortex-m4f")
    losses, accuracy, params = host_training(bn_dropout_model)
    report, _ = train_on(bn_dropout_model, "cortex-m4f")
    np.testing.assert_allclose(report.losses, losses, rtol=1e-5)
    assert report.value == pytest.approx(accuracy, abs=1 / len(bn_dropout_model[2]))
    np.testing.assert_allclose(report.params, params, rtol=0, atol=1e-5)
    assert report.losses[-1] < report.losses[0]
