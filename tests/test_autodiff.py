"""The autodiff driver's own guarantees (tinygrad-style): a gradient rule that forgets an input
fails loudly instead of training silently wrong."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from onnx import helper

import codegen
from codegen import ops
from codegen.errors import InternalError
from helpers import onnx_model


def test_incomplete_gradient_rule_is_caught(tmp_path, monkeypatch):
    gemm = ops.REGISTRY[("", "Gemm")]

    def forgets_bias(node, g):
        give = g.give
        g.give = lambda i, grad: None if i == 2 else give(i, grad)
        gemm.grad(node, g)

    monkeypatch.setitem(ops.REGISTRY, ("", "Gemm"), dataclasses.replace(gemm, grad=forgets_bias))
    onnx_model([helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1, name="fc")], {"x": [2, 3]}, {"y": [2, 4]},
               {"W": np.ones((4, 3), np.float32), "b": np.zeros(4, np.float32)}, path=tmp_path / "m.onnx")
    with pytest.raises(InternalError, match=r"node 'fc' \(Gemm\).*no gradient to input\(s\) \['b'\]"):
        codegen.generate(tmp_path / "m.onnx", tmp_path / "out", loss="mse")
    assert not (tmp_path / "out").exists()
