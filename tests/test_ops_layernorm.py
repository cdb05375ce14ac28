"""LayerNormalization: forward and the gradients of X, Scale and B in the generated C against
PyTorch's layer_norm (see test_ops.run_case), the Mean/InvStdDev outputs, and what it refuses."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import helper

from codegen import loader, training
from codegen.errors import McutrainError, UnsupportedError
from helpers import compile_model, onnx_model
from test_ops import RNG, rand, run_case

# (x shape, axis, with bias, epsilon): negative axes, the whole tensor (axis 0), rows of 2 (rows of
# one value are left out: torch's x - mean(x) is not exactly 0 there, ours is)
CASES = [((4, 6), -1, True, None), ((2, 3, 5), 1, True, 1e-3), ((2, 3, 4, 4), -2, False, None),
         ((3, 4), 0, True, 1e-2), ((6, 2), 1, False, None)]


@pytest.mark.parametrize("shape, axis, bias, eps", CASES, ids=str)
def test_layer_normalization(tmp_path, shape, axis, bias, eps):
    normalized = shape[axis:]
    attrs = {"axis": axis, **({} if eps is None else {"epsilon": eps})}
    operands = [rand(*shape, low=-2, high=2) * rand(*shape[:axis], *(1,) * len(normalized), low=0.5, high=3),
                rand(*normalized, low=0.5, high=1.5)] + ([rand(*normalized)] if bias else [])

    def ref(x, w, b=None):
        return F.layer_norm(x, normalized, w, b, eps=1e-5 if eps is None else eps)

    run_case(tmp_path, "LayerNormalization", operands, ref, attrs)


def test_scale_with_leading_ones(tmp_path):
    """A Scale/B of shape (1, n) broadcasts like (n,) over a normalised shape (n,)."""
    operands = [rand(3, 5, low=-2, high=2), rand(1, 5, low=0.5, high=1.5), rand(1, 5)]
    run_case(tmp_path, "LayerNormalization", operands,
             lambda x, w, b: F.layer_norm(x, (5,), w.reshape(5), b.reshape(5)))


def _stats_model(path, shape, axis, x_trains: bool):
    """y = LN(x) * InvStdDev + Mean: the statistics read by the model. x_trains: x enters through
    Add(x, p) with p a parameter, so it needs a gradient."""
    stats = [*shape[:axis], *(1,) * (len(shape) - axis)]
    first = [helper.make_node("Add", ["x", "p"], ["a"])] if x_trains else []
    nodes = first + [
        helper.make_node("LayerNormalization", ["a" if x_trains else "x", "w", "b"], ["n", "mean", "inv"], axis=axis),
        helper.make_node("Mul", ["n", "inv"], ["m"]), helper.make_node("Add", ["m", "mean"], ["y"])]
    inits = {"w": rand(*shape[axis:], low=0.5, high=1.5), "b": rand(*shape[axis:]),
             **({"p": np.zeros(shape, np.float32)} if x_trains else {})}
    onnx_model(nodes, {"x": list(shape)}, {"y": list(shape)}, inits, opset=18, path=path)
    return inits, stats


def test_mean_inv_std_outputs(tmp_path):
    """Mean and InvStdDev as outputs the model reads: forward, and the Scale/B gradients (X needs none)."""
    shape, axis = (3, 2, 4), 1
    inits, _ = _stats_model(tmp_path / "m.onnx", shape, axis, x_trains=False)
    trainer = compile_model(tmp_path / "m.onnx", tmp_path / "build", loss="mse", lr=1.0)
    x = RNG.normal(size=shape).astype(np.float32) * 2 + 1
    w, b = (torch.tensor(inits[k], requires_grad=True) for k in ("w", "b"))
    xt = torch.tensor(x)
    mean = xt.mean((1, 2), keepdim=True)
    inv = 1 / torch.sqrt(xt.var((1, 2), unbiased=False, keepdim=True) + 1e-5)
    y_ref = F.layer_norm(xt, shape[axis:], w, b) * inv + mean
    np.testing.assert_allclose(trainer.predict(x), y_ref.detach().numpy(), rtol=1e-5, atol=1e-5)
    target = rand(*shape)
    F.mse_loss(y_ref, torch.tensor(target)).backward()
    before = trainer.get_params()
    trainer.train_step(x, target)
    after = trainer.get_params()
    for name, t in (("w", w), ("b", b)):
        np.testing.assert_allclose(before[name] - after[name], t.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_refusals(tmp_path):
    _stats_model(tmp_path / "m.onnx", (3, 4), 1, x_trains=True)
    with pytest.raises(UnsupportedError, match="gradient through LayerNormalization's Mean/InvStdDev"):
        compile_model(tmp_path / "m.onnx", tmp_path / "b1", loss="mse")
    cases = {"stash_type=0": ({"stash_type": 0}, (4,)), "broadcast within the normalised shape": ({}, (1,))}
    for message, (attrs, scale_shape) in cases.items():
        node = helper.make_node("LayerNormalization", ["x", "w"], ["y"], **attrs)
        onnx_model([node], {"x": [2, 4]}, {"y": [2, 4]}, {"w": rand(*scale_shape)}, path=tmp_path / "r.onnx")
        with pytest.raises(McutrainError, match=message):
            compile_model(tmp_path / "r.onnx", tmp_path / "b2", loss="mse")


def test_bias_is_a_bias(tmp_path):
    """B counts as a bias for --train-bias-only / --train-bias-last; the layer for --train-last."""
    node = helper.make_node("LayerNormalization", ["x", "w", "b"], ["y"])
    onnx_model([node], {"x": [2, 4]}, {"y": [2, 4]}, {"w": rand(4), "b": rand(4)}, path=tmp_path / "m.onnx")
    graph = loader.load(tmp_path / "m.onnx")
    assert training.select_trainable(graph, training.Selection(bias_only=True)) == ["b"]
    assert training.select_trainable(graph, training.Selection(bias_last=1)) == ["b"]
    assert training.select_trainable(graph, training.Selection(last=1)) == ["w", "b"]
