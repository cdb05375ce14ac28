"""LRN: forward and gradient against PyTorch autograd (run_case). For odd sizes PyTorch's
local_response_norm is the ONNX formula; for even sizes the window differs (PyTorch puts the
extra channel before c, ONNX after), so those cases, and 2-D inputs (which PyTorch refuses), use
the ONNX formula written in torch."""
from __future__ import annotations

import pytest
import torch

from test_ops import rand, run_case


def onnx_lrn(x, size, alpha=1e-4, beta=0.75, bias=1.0):
    """The ONNX spec's formula: channel c's window is [c - floor((size-1)/2), c + ceil((size-1)/2)]."""
    sq, lo, hi = x * x, (size - 1) // 2, size // 2
    sums = torch.stack([sq[:, max(0, c - lo):c + hi + 1].sum(1) for c in range(x.shape[1])], 1)
    return x / (bias + alpha / size * sums) ** beta


CASES = [  # shape, attrs (size required)
    ((2, 5, 3, 3), {"size": 3}),
    ((1, 7, 4, 4), {"size": 5, "alpha": 0.5, "beta": 0.75, "bias": 2.0}),
    ((2, 6, 5), {"size": 5, "alpha": 2.0, "beta": 0.3, "bias": 1.0}),
    ((3, 8), {"size": 3, "alpha": 1.5, "beta": 1.2, "bias": 0.5}),
    ((2, 3, 2, 2), {"size": 7, "alpha": 1.0}),  # the window is wider than the channels
    ((2, 4, 3), {"size": 1, "alpha": 3.0, "beta": 0.5}),
    ((1, 6, 2, 3), {"size": 4, "alpha": 1.0, "bias": 1.5}),  # even sizes: ONNX's window, not torch's
    ((2, 5, 3), {"size": 2, "alpha": 2.0, "beta": 0.6}),
]


@pytest.mark.parametrize("shape, attrs", CASES, ids=str)
def test_lrn(tmp_path, shape, attrs):
    if attrs["size"] % 2 and len(shape) > 2:
        def fn(x):
            return torch.nn.functional.local_response_norm(x, attrs["size"], attrs.get("alpha", 1e-4),
                                                           attrs.get("beta", 0.75), attrs.get("bias", 1.0))
    else:
        def fn(x):
            return onnx_lrn(x, **attrs)
    run_case(tmp_path, "LRN", [rand(*shape, low=-2.0, high=2.0)], fn, attrs=attrs)


def test_onnx_formula_is_torchs_for_odd_sizes():
    """The reference of the even cases is the formula that agrees with PyTorch where both are defined."""
    x = torch.tensor(rand(2, 6, 3, 2))
    for size in (1, 3, 5, 9):
        torch.testing.assert_close(onnx_lrn(x, size, 0.7, 0.8, 1.3),
                                   torch.nn.functional.local_response_norm(x, size, 0.7, 0.8, 1.3))


@pytest.mark.parametrize("shape, size, message", [((2, 3, 4), 0, "size 0 is below 1"),
                                                  ((5,), 3, "has no channel axis")])
def test_invalid_refused(tmp_path, shape, size, message):
    import codegen
    from codegen.errors import ShapeError
    from helpers import onnx_model
    from onnx import helper

    onnx_model([helper.make_node("Add", ["x", "p"], ["a"]), helper.make_node("LRN", ["a"], ["y"], size=size)],
               {"x": list(shape)}, {"y": list(shape)}, {"p": rand(*shape)}, path=tmp_path / "m.onnx")
    with pytest.raises(ShapeError, match=message):
        codegen.generate(tmp_path / "m.onnx", tmp_path / "out", loss="mse")
