"""Elementwise math (Gelu, Erf, Elu, Selu, Softplus, Exp, Log, Sqrt, Pow with a constant
exponent, Neg, Abs, Reciprocal) and the reductions ReduceSum, ReduceMax, ReduceL2: forward and
gradients in the generated C against PyTorch autograd (test_ops.run_case's tolerance; the cases
of a test share one compiled model, test_ops_index.run_cases), edge attributes and values
(kinks, ties, zeros, large inputs), refusals, a model using them exported by torch (legacy) and
trained side by side with PyTorch, and one (dynamo) trained under QEMU like the host."""
from __future__ import annotations

import functools
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import helper

import codegen
import test_ops
from codegen import loader
from codegen.errors import McutrainError
from helpers import export_torch, onnx_model
from test_ops import rand
from test_ops_index import Case, one_node, run_cases
from test_ops_misc import f32, i64
from test_train_vs_torch import train_side_by_side


def case(op: str, x: np.ndarray, fn, attrs: dict | None = None, consts: dict | None = None) -> Case:
    """op(x, *consts) with `attrs`, x a parameter; fn its PyTorch reference."""
    consts = consts or {}
    return Case([x], one_node(op, list(consts), **(attrs or {})), consts, fn)


def run_together(tmp_path, cases: dict, monkeypatch=None, opset: int = 18):
    """The named cases in one model (a failing gradient names p<k>, the k-th case)."""
    if opset != 18:
        monkeypatch.setattr(test_ops, "onnx_model", functools.partial(onnx_model, opset=opset))
    run_cases(tmp_path, list(cases.values()))


def selu(alpha, gamma):
    return lambda x: gamma * torch.where(x > 0, x, alpha * torch.expm1(x))


def kinks():
    """Zeros (Abs's gradient is 0 there, as PyTorch; Elu's takes the exp side: alpha)."""
    return f32([[-2.0, -0.0, 0.0, 1.5], [0.0, 3.0, -1.0, 0.0]])


def both_signs(x):
    x[0] *= -1
    return x


UNARY = {
    "erf": case("Erf", rand(3, 7, low=-3, high=3), torch.erf),
    "elu": case("Elu", rand(3, 7, low=-4, high=4), F.elu),
    "elu_alpha_0.3": case("Elu", rand(2, 5, low=-4, high=4), lambda x: F.elu(x, 0.3), {"alpha": 0.3}),
    "elu_alpha_0": case("Elu", rand(2, 5, low=-4, high=4), lambda x: F.elu(x, 0.0), {"alpha": 0.0}),
    "elu_alpha_negative": case("Elu", rand(2, 5, low=-4, high=4), lambda x: F.elu(x, -0.7), {"alpha": -0.7}),
    "elu_kinks": case("Elu", kinks(), lambda x: F.elu(x, 0.5), {"alpha": 0.5}),
    "selu": case("Selu", rand(3, 7, low=-4, high=4), F.selu),
    "selu_alpha_gamma": case("Selu", rand(2, 5, low=-4, high=4), selu(2.0, 0.5), {"alpha": 2.0, "gamma": 0.5}),
    "selu_gamma_negative": case("Selu", rand(2, 5, low=-4, high=4), selu(1.67326319217681884765625, -1.5),
                                {"gamma": -1.5}),
    "softplus": case("Softplus", rand(4, 8, low=-30, high=30), F.softplus),  # past PyTorch's threshold 20
    "exp": case("Exp", rand(3, 7, low=-5, high=5), torch.exp),
    "log": case("Log", rand(3, 7, low=0.05, high=5), torch.log),
    "sqrt": case("Sqrt", rand(3, 7, low=0.05, high=5), torch.sqrt),
    "neg": case("Neg", rand(2, 3, 4), torch.neg),
    "abs": case("Abs", rand(3, 7, low=-3, high=3), torch.abs),
    "abs_kinks": case("Abs", kinks(), torch.abs),
    "reciprocal": case("Reciprocal", both_signs(rand(3, 7, low=0.3, high=3)), torch.reciprocal),
}


def test_unary(tmp_path):
    run_together(tmp_path, UNARY)


def gelu_input():
    x = rand(2, 3, 5, low=-5, high=5)
    x[0, 0, :3] = [0.0, -10.0, 10.0]
    return x


def test_gelu(tmp_path, monkeypatch):
    """Gelu is opset 20; approximate absent (none), none, tanh."""
    run_together(tmp_path, {
        "default": case("Gelu", gelu_input(), F.gelu),
        "none": case("Gelu", gelu_input(), F.gelu, {"approximate": "none"}),
        "tanh": case("Gelu", gelu_input(), lambda t: F.gelu(t, approximate="tanh"), {"approximate": "tanh"})},
        monkeypatch, opset=20)


def pow_case(e: np.ndarray, low: float, high: float) -> Case:
    """e: the exponent initializer (its dtype and shape), over a base of shape (4, 5)."""
    return case("Pow", rand(4, 5, low=low, high=high), lambda t: t ** torch.tensor(e, dtype=torch.float32),
                consts={"e": e})


def test_pow(tmp_path):
    run_together(tmp_path, {
        "square": pow_case(f32(2.0), -3, 3), "sqrt": pow_case(f32(0.5), 0.1, 4),
        "int64_cube": pow_case(i64(3), -2, 2), "negative_fraction": pow_case(f32(-1.5), 0.2, 3),
        "zero": pow_case(f32(0.0), -2, 2), "one_element_vector": pow_case(np.array([1.7], np.float32), 0.1, 3),
        "one_element_matrix": pow_case(np.array([[-1.0]], np.float32), 0.5, 2),
        "per_column": pow_case(np.array([2.0, 0.5, 3.0, -1.0, 0.0], np.float32), 0.2, 2),
        "per_column_int32": pow_case(np.array([[1, 2, 3, 0, 4]], np.int32), -2, 2),
        "per_element": pow_case(rand(4, 5, low=-2, high=2), 0.2, 2)})


# ---- reductions ----
RNG_TIES = np.random.default_rng(7)


def ties(*shape):
    """Values from a few levels: groups hold ties."""
    return RNG_TIES.integers(-2, 3, size=shape).astype(np.float32)


def zero_rows(x):
    """The first two rows zero: some ReduceL2 groups are all zero (y = 0, then dx = 0 as PyTorch)."""
    x[:2] = 0.0
    return x


def reference(op: str, axes, keepdims: int, rank: int):
    dims = list(range(rank)) if axes is None else axes
    return {"ReduceSum": lambda t: t.sum(dims, keepdim=bool(keepdims)),
            "ReduceMax": lambda t: t.amax(dims, keepdim=bool(keepdims)),
            "ReduceL2": lambda t: torch.linalg.vector_norm(t, 2, dims, keepdim=bool(keepdims))}[op]


# shape, axes (None: the input is omitted), keepdims
REDUCE = [((2, 3, 4), [1], 0), ((2, 3, 4), [-1, 0], 1), ((2, 3, 4), None, 0), ((1, 3, 4, 2), [1, 3], 1),
          ((3, 5), [0], 1), ((6,), [0], 0)]
OPERAND = {"ReduceSum": rand, "ReduceMax": ties, "ReduceL2": lambda *shape: zero_rows(rand(*shape))}


def reduce_cases(op: str) -> dict[str, Case]:
    cases = {f"{shape} {axes} keepdims={keepdims}": case(
        op, OPERAND[op](*shape), reference(op, axes, keepdims, len(shape)), {"keepdims": keepdims},
        {} if axes is None else {"axes": i64(*axes)}) for shape, axes, keepdims in REDUCE}
    # no axes and noop_with_empty_axes=1: the identity (ReduceL2: |x|, gradient sign(x), 0 at 0)
    cases["noop_with_empty_axes"] = case(op, zero_rows(rand(3, 4)), torch.abs if op == "ReduceL2" else torch.clone,
                                         {"noop_with_empty_axes": 1})
    return cases


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax", "ReduceL2"])
def test_reduce(tmp_path, op):
    cases = reduce_cases(op)
    if op == "ReduceMax":  # a group of equal values shares the gradient evenly (torch.amax)
        cases["all_equal"] = case(op, np.ones((2, 4), np.float32), lambda t: t.amax(1), {"keepdims": 0},
                                  {"axes": i64(1)})
    run_together(tmp_path, cases)


# ---- refusals ----
@pytest.mark.parametrize("nodes, inits, y_shape, opset, message", [
    ([helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0), helper.make_node("Pow", ["x", "m"], ["y"])],
     {}, [2, 3], 18, "node 'y' (Pow): a computed (non-constant) exponent input is not supported"),
    ([helper.make_node("Pow", ["x", "e"], ["y"])], {"e": f32([[1.0], [2.0]])}, [2, 3], 18,
     "node 'y' (Pow): an exponent of shape [2, 1] for a base of shape [2, 3] (supported: one exponent, or "
     "exponents repeating along the base's leading dimensions) is not supported"),
    ([helper.make_node("Pow", ["x", "e"], ["y"])], {"e": f32([[[1.0, 2.0, 3.0]]] * 4)}, [4, 2, 3], 18,
     "node 'y' (Pow): an exponent of shape [4, 1, 3] for a base of shape [2, 3]"),
    ([helper.make_node("Gelu", ["x"], ["y"], approximate="fast")], {}, [2, 3], 20,
     "node 'y' (Gelu): approximate='fast' (one of none, tanh)"),
    ([helper.make_node("ReduceMean", ["x"], ["m"]), helper.make_node("Cast", ["m"], ["a"], to=7),
      helper.make_node("ReduceMax", ["x", "a"], ["y"])], {}, [2, 1], 18,
     "node 'y' (ReduceMax): the shape of output 'y' is not static"),  # before the op's own check
], ids=["pow_computed_exponent", "pow_exponent_column", "pow_exponent_broadcasts_base", "gelu_approximate",
        "reduce_computed_axes"])
def test_refused(tmp_path, nodes, inits, y_shape, opset, message):
    onnx_model(nodes, {"x": [2, 3]}, {"y": y_shape}, inits, opset=opset, path=tmp_path / "m.onnx")
    with pytest.raises(McutrainError, match=re.escape(message)):
        loader.load(tmp_path / "m.onnx")


# ---- a model exported by torch ----
class Mix(torch.nn.Module):
    """The new ops as torch's exporters write them (the legacy one decomposes gelu into Erf,
    dynamo writes Gelu of opset 20); x ** 2 and x ** 0.5 become Pow with a constant."""

    def forward(self, x):
        return 0.2 * (F.gelu(x) + F.gelu(x, approximate="tanh") + 0.1 * x ** 2 - (x.abs() + 1) ** 0.5
                     + F.elu(x) + F.selu(x) + torch.exp(-x.abs()) + torch.log(x * x + 1) + torch.sqrt(x * x + 1)
                     + 1 / (x * x + 1) + torch.erf(x) + x.amax(1, keepdim=True) - 0.1 * x.sum(1, keepdim=True)
                     + 0.1 * torch.linalg.vector_norm(x, 2, 1, keepdim=True))


def test_exported_model_trains_like_torch(tmp_path):
    """The legacy exporter (its Softplus is the ONNX op; dynamo's has a threshold Where)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), Mix(), torch.nn.Softplus(), torch.nn.Linear(32, 10))
    train_side_by_side(tmp_path, model, loss="mse", dynamo=False, lr=0.02)


def test_board_trains_like_host(tmp_path):
    """The kernels with the board's C library (newlib's erff, expm1f, powf, ...) and its scalar
    kernels under QEMU train like the host build, within test_boards' tolerance (DECISIONS 4).
    The dynamo export: Gelu itself."""
    boards = pytest.importorskip("test_boards", reason="pyelftools (a dev extra) reads the firmware")
    boards.need("cortex-m4f")
    x, y = boards.clusters(32)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 16), Mix(), torch.nn.Linear(16, 4))
    path = export_torch(net, torch.zeros(boards.BATCH, 32), tmp_path / "mix.onnx", dynamo=True)
    codegen.generate(path, tmp_path / "mix", loss="cross_entropy", lr=0.05)
    model = (tmp_path / "mix", x, y)
    losses, accuracy, params = boards.host_training(model)
    report, _ = boards.train_on(model, "cortex-m4f")
    print(f"cortex-m4f losses {report.losses} (host {losses}), max |w - host| {np.abs(report.params - params).max():.2e}")
    np.testing.assert_allclose(report.losses, losses, rtol=1e-5)
    np.testing.assert_allclose(report.params, params, rtol=0, atol=1e-5)
    assert report.losses[-1] < report.losses[0]
