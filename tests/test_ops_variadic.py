"""Sum, Mean, Max, Min (variadic, numpy broadcasting): forward and gradients against PyTorch
autograd (run_case), with 1, 2 and 3 inputs and exact ties for Max/Min (torch.amax/amin split
the gradient evenly among equal values, as the compiler does for N inputs)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from test_ops import rand, run_case


def _stacked(reduce):
    def fn(*xs):
        return reduce(torch.stack(torch.broadcast_tensors(*xs)), 0)
    return fn


def _sum(*xs):
    y = xs[0]
    for x in xs[1:]:
        y = y + x
    return y


VARIADIC = {
    "Sum": _sum,
    "Mean": lambda *xs: _sum(*xs) / len(xs),
    "Max": _stacked(torch.amax),
    "Min": _stacked(torch.amin),
}
SHAPES = [((3, 4),), ((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 1), (1, 4)), ((2, 3, 4), (3, 1)),
          ((5,), (2, 5)), ((3, 4), (3, 4), (3, 4)), ((2, 1, 3), (4, 1), (3,)), ((4,), (3, 1), (2, 1, 1)),
          ((2, 3, 4), (2, 3, 4), ())]


@pytest.mark.parametrize("op", sorted(VARIADIC))
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
def test_variadic(tmp_path, op, shapes):
    run_case(tmp_path, op, [rand(*s) for s in shapes], VARIADIC[op])


@pytest.mark.parametrize("op", ["Max", "Min"])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (3, 4), (3, 4)), ((3, 4), (4,), (3, 1))],
                         ids=str)
def test_extreme_ties(tmp_path, op, shapes):
    """Few distinct values, so many elements tie between 2 or 3 inputs: each gets 1/k of dy."""
    rng = np.random.default_rng(7)
    operands = [rng.choice([-0.5, 0.25, 0.75], size=s).astype(np.float32) for s in shapes]
    operands[1].flat[0] = operands[0].flat[0]  # at least one tie
    run_case(tmp_path, op, operands, VARIADIC[op])


def test_two_way_tie_matches_torch_maximum(tmp_path):
    """All equal: torch.maximum gives each input half of dy."""
    a = rand(3, 4)
    run_case(tmp_path, "Max", [a, a.copy()], torch.maximum)


def test_scalar_kernels(tmp_path):
    """The kernels have one implementation; the scalar build (helpers.KERNELS) compiles it too."""
    run_case(tmp_path, "Max", [rand(2, 3, 4), rand(3, 1), rand(4)], VARIADIC["Max"], kernels="scalar")


def test_too_many_inputs_refused(tmp_path):
    import codegen
    from codegen.errors import UnsupportedError
    from helpers import onnx_model
    from onnx import helper

    names = [f"p{i}" for i in range(17)]
    onnx_model([helper.make_node("Add", ["x", "p0"], ["a0"]), helper.make_node("Sum", ["a0", *names[1:]], ["y"])],
               {"x": [3]}, {"y": [3]}, {n: rand(3) for n in names}, path=tmp_path / "m.onnx")
    with pytest.raises(UnsupportedError, match="Sum of 17 inputs"):
        codegen.generate(tmp_path / "m.onnx", tmp_path / "out", loss="mse")
