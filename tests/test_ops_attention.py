"""Attention (opset 23): forward and the gradients of Q, K and V in the generated C against
PyTorch's scaled_dot_product_attention (see test_ops.run_case), and what it refuses."""
from __future__ import annotations

from functools import partial

import pytest
import torch.nn.functional as F
from onnx import helper

import test_ops
from codegen.errors import McutrainError
from helpers import compile_model, onnx_model
from test_ops import rand, run_case


@pytest.fixture
def opset23(monkeypatch):
    monkeypatch.setattr(test_ops, "onnx_model", partial(onnx_model, opset=23))


# (batch, heads, queries, keys, features, value features, scale attribute)
CASES = [(2, 2, 4, 4, 3, None), (1, 3, 5, 2, 4, 0.3), (3, 1, 1, 6, 2, None)]


@pytest.mark.parametrize("b, h, s, l, d, scale", CASES, ids=str)
def test_attention(tmp_path, opset23, b, h, s, l, d, scale):
    dv = d + 1
    operands = [rand(b, h, s, d, low=-2, high=2), rand(b, h, l, d, low=-2, high=2), rand(b, h, l, dv)]
    attrs = {} if scale is None else {"scale": scale}
    run_case(tmp_path, "Attention", operands, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=scale),
             attrs)


@pytest.mark.parametrize("inputs, shapes, attrs, message", [
    (["q", "k", "v", "m"], [(1, 2, 3, 4)] * 3 + [(3, 3)], {}, "attn_mask or past_key"),
    (["q", "k", "v"], [(1, 2, 3, 4)] * 3, {"is_causal": 1}, "is_causal or softcap"),
    (["q", "k", "v"], [(1, 2, 3, 4), (1, 1, 3, 4), (1, 1, 3, 4)], {}, "grouped-query"),
    (["q", "k", "v"], [(1, 3, 4)] * 3, {"q_num_heads": 2, "kv_num_heads": 2}, "3-D inputs"),
], ids=["mask", "causal", "gqa", "3d"])
def test_refusals(tmp_path, inputs, shapes, attrs, message):
    node = helper.make_node("Attention", inputs, ["y"], **attrs)
    y_shape = [*shapes[0][:-1], shapes[2][-1]]
    onnx_model([node], {"q": list(shapes[0])}, {"y": y_shape},
               {n: rand(*s) for n, s in zip(inputs[1:], shapes[1:])}, opset=23, path=tmp_path / "a.onnx")
    with pytest.raises(McutrainError, match=message):
        compile_model(tmp_path / "a.onnx", tmp_path / "b", loss="mse")
