"""Numerical robustness: losses and sigmoid stay finite (and match PyTorch) for huge logits, and a
step whose loss is not finite changes nothing: weights and momentum are as they were, so the
next normal step matches a trainer that never saw the bad batch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper

from helpers import compile_model, onnx_model

LOGITS = [100.0, -100.0, 1e4, -1e4]


def scaled(tmp_path, op: str | None, loss: str, classes: int = 4):
    """y = op(x * w), w a trainable vector of ones: the logits are the inputs."""
    nodes = [helper.make_node("Mul", ["x", "w"], ["z" if op else "y"])]
    if op:
        nodes.append(helper.make_node(op, ["z"], ["y"]))
    onnx_model(nodes, {"x": [2, classes]}, {"y": [2, classes]}, {"w": np.ones(classes, np.float32)},
               path=tmp_path / "m.onnx")
    return compile_model(tmp_path / "m.onnx", tmp_path / "build", loss=loss, lr=0.1)


@pytest.mark.parametrize("big", LOGITS)
def test_cross_entropy_large_logits(tmp_path, big):
    trainer = scaled(tmp_path, None, "cross_entropy")
    x = np.array([[big, 0, -big, 1], [0, big, 2, -big]], np.float32)
    y = np.array([2, 1])
    ref = torch.nn.functional.cross_entropy(torch.tensor(x), torch.tensor(y)).item()
    assert trainer.train_step(x, y) == pytest.approx(ref, rel=1e-5)
    assert np.all(np.isfinite(trainer.get_params()["w"]))


@pytest.mark.parametrize("big", LOGITS)
@pytest.mark.parametrize("op, loss", [("Sigmoid", "mse"), (None, "bce_with_logits")])
def test_sigmoid_large_logits(tmp_path, big, op, loss):
    trainer = scaled(tmp_path, op, loss)
    x = np.array([[big, -big, 0, 1], [-big, big, 3, -3]], np.float32)
    y = np.array([[1, 0, 1, 0], [0, 0, 1, 1]], np.float32)
    z = torch.tensor(x)
    ref = (torch.nn.functional.mse_loss(torch.sigmoid(z), torch.tensor(y)) if op
           else torch.nn.functional.binary_cross_entropy_with_logits(z, torch.tensor(y))).item()
    assert np.all(np.isfinite(trainer.predict(x)))
    assert trainer.train_step(x, y) == pytest.approx(ref, rel=1e-5, abs=1e-7)
    assert np.all(np.isfinite(trainer.get_params()["w"]))


def mlp_trainer(tmp_path, name):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "b2"], ["y"], transB=1)]
    onnx_model(nodes, {"x": [4, 6]}, {"y": [4, 3]},
               {"W1": rng.normal(size=(5, 6)).astype(np.float32), "b1": np.zeros(5, np.float32),
                "W2": rng.normal(size=(3, 5)).astype(np.float32), "b2": np.zeros(3, np.float32)},
               path=tmp_path / "mlp.onnx")
    return compile_model(tmp_path / "mlp.onnx", tmp_path / name, loss="cross_entropy", lr=0.1, momentum=0.9)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_step_changes_nothing(tmp_path, bad):
    rng = np.random.default_rng(1)
    batches = [(rng.normal(size=(4, 6)).astype(np.float32), rng.integers(0, 3, 4)) for _ in range(3)]
    hit, clean = mlp_trainer(tmp_path, "a"), mlp_trainer(tmp_path, "b")
    for t in (hit, clean):  # some momentum first
        t.train_step(*batches[0])
    before = hit.get_params()
    x = batches[1][0].copy()
    x[1, 2] = bad
    assert not np.isfinite(hit.train_step(x, batches[1][1]))
    for name, value in hit.get_params().items():
        np.testing.assert_array_equal(value, before[name])
    # The momentum buffers were not touched either: the next steps match the clean trainer exactly.
    for x, y in batches[1:]:
        assert hit.train_step(x, y) == clean.train_step(x, y)
    for name, value in hit.get_params().items():
        np.testing.assert_array_equal(value, clean.get_params()[name])


def test_nan_input_through_max_pool_changes_nothing(tmp_path):
    """Conv -> MaxPool -> Gemm: a NaN pixel reaches the loss (max pooling propagates NaN, as
    PyTorch's does), so the step is refused instead of writing NaN into the conv weights."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Conv", ["x", "W", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "W2", "b2"], ["y"], transB=1)]
    onnx_model(nodes, {"x": [2, 1, 4, 4]}, {"y": [2, 3]},
               {"W": rng.normal(size=(2, 1, 3, 3)).astype(np.float32), "b": np.zeros(2, np.float32),
                "W2": rng.normal(size=(3, 8)).astype(np.float32), "b2": np.zeros(3, np.float32)},
               path=tmp_path / "cnn.onnx")
    trainer = compile_model(tmp_path / "cnn.onnx", tmp_path / "b", loss="cross_entropy", lr=0.1)
    before = trainer.get_params()
    x = rng.normal(size=(2, 1, 4, 4)).astype(np.float32)
    x[0, 0, 1, 2] = np.nan
    assert np.isnan(trainer.train_step(x, np.array([0, 1])))
    for name, value in trainer.get_params().items():
        np.testing.assert_array_equal(value, before[name])


def test_non_finite_input_with_finite_loss_is_refused(tmp_path):
    """Conv1d -> Tanh: +Inf in the input saturates tanh, so the loss stays finite, yet the weight
    gradients would be Inf/NaN. train_step checks its inputs first: nothing changes and
    last_status() says why; the next normal steps match a trainer that never saw the batch."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "W", "b"], ["c"], pads=[1, 1]), helper.make_node("Tanh", ["c"], ["y"])]
    onnx_model(nodes, {"x": [2, 1, 6]}, {"y": [2, 2, 6]},
               {"W": rng.normal(size=(2, 1, 3)).astype(np.float32), "b": np.zeros(2, np.float32)},
               path=tmp_path / "c1d.onnx")
    hit, clean = (compile_model(tmp_path / "c1d.onnx", tmp_path / n, loss="mse", lr=0.1, momentum=0.9) for n in "ab")
    batches = [(rng.normal(size=(2, 1, 6)).astype(np.float32), rng.normal(size=(2, 2, 6)).astype(np.float32))
               for _ in range(3)]
    for t in (hit, clean):
        t.train_step(*batches[0])
    bad = batches[1][0].copy()
    bad[0, 0, 3] = np.inf
    before = hit.get_params()
    assert np.isnan(hit.train_step(bad, batches[1][1])) and hit.last_status() == -1
    for name, value in hit.get_params().items():
        np.testing.assert_array_equal(value, before[name])
    for x, y in batches[1:]:
        assert hit.train_step(x, y) == clean.train_step(x, y) and hit.last_status() == 0
    for name, value in hit.get_params().items():
        np.testing.assert_array_equal(value, clean.get_params()[name])


@pytest.mark.parametrize("case, status", [("ok", 0), ("nan-target", -2), ("inf-loss", -3)])
def test_last_status_mse(tmp_path, case, status):
    trainer = scaled(tmp_path, None, "mse")
    x, y = np.ones((2, 4), np.float32), np.zeros((2, 4), np.float32)
    if case == "nan-target":
        y[1, 1] = np.nan
    if case == "inf-loss":
        x[:] = 1e30  # finite input, the squared error overflows
    loss = trainer.train_step(x, y)
    assert trainer.last_status() == status and np.isfinite(loss) == (status == 0)


@pytest.mark.parametrize("label, status", [(3, 0), (4, -2), (-1, -2)])
def test_last_status_class_index(tmp_path, label, status):
    """A class index out of range is refused before the forward pass (the C API's callers do not
    go through the Python label check)."""
    trainer = scaled(tmp_path, None, "cross_entropy")
    labels = trainer._ffi.new("int32_t[]", [0, label])
    x = np.ones((2, 4), np.float32)
    trainer._fn("train_step")(trainer._ptr(x, "float"), labels)
    assert trainer.last_status() == status


@pytest.mark.parametrize("big", [1e4, -1e4, 3e5])
def test_log_softmax_keeps_precision_on_large_inputs(tmp_path, big):
    """(x - max) - log(sum exp(x - max)), not x - (max + log(sum)): with inputs around 1e4 the
    latter rounds outputs of about -0.4 by ~1e-3 (ONNX's test_logsoftmax_large_number)."""
    trainer = scaled(tmp_path, "LogSoftmax", "mse")
    x = np.array([[big, big + 0.5, big - 0.25, big + 1], [0, 1, 2, 3]], np.float32)
    ref = torch.log_softmax(torch.tensor(x, dtype=torch.float64), dim=1).numpy()
    np.testing.assert_allclose(trainer.predict(x), ref, rtol=0, atol=2e-6)
    y = np.array([3, 1])
    ce = torch.nn.functional.cross_entropy(torch.tensor(x, dtype=torch.float64), torch.tensor(y)).item()
    (tmp_path / "ce").mkdir()
    assert scaled(tmp_path / "ce", None, "cross_entropy").train_step(x, y) == pytest.approx(ce, abs=2e-6)
