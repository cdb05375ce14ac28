"""Every op's forward and gradient in the generated C against PyTorch autograd.

How a case runs: the op's float operands are trainable parameters of a one-node model (the first
one enters through Add(x, p0) with x = 0, so the model has an input); the loss is MSE against
random targets. predict() gives the forward output; one SGD step with lr = 1 gives each
operand's gradient as (before - after). Tolerance: float32, rtol 1e-4 / atol 1e-5 (the
gradient read back through one float32 weight update loses up to one ulp of the weight)."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch
from onnx import helper

from helpers import KERNELS, STRICT, compile_model, onnx_model

RNG = np.random.default_rng(1234)


def rand(*shape, low=-1.0, high=1.0):
    return RNG.uniform(low, high, size=shape).astype(np.float32)


def run_case(tmp_path, op, operands, torch_fn, attrs=None, consts=None, kernels="simd", build=None):
    """operands: float arrays (become parameters); consts: int64 arrays appended as inputs;
    kernels: which implementation of the C kernels (helpers.KERNELS); build: (input names) ->
    the nodes computing "y" from them, instead of the one `op` node."""
    consts = consts or {}
    names = [f"p{i}" for i in range(len(operands))]
    x_shape = operands[0].shape
    build = build or (lambda inputs: [helper.make_node(op, inputs, ["y"], **(attrs or {}))])
    nodes = [helper.make_node("Add", ["x", "p0"], ["a0"]), *build(["a0", *names[1:], *consts])]
    t_args = [torch.tensor(v, requires_grad=True) for v in operands]
    y_ref = torch_fn(*t_args)
    target = rand(*y_ref.shape)
    path = tmp_path / "op.onnx"
    onnx_model(nodes, {"x": list(x_shape)}, {"y": list(y_ref.shape)},
               {**dict(zip(names, operands)), **consts}, path=path)
    trainer = compile_model(path, tmp_path / "build", KERNELS[kernels], loss="mse", lr=1.0)
    strict = subprocess.run(["cc", *STRICT, *KERNELS[kernels], "-fsyntax-only", "op.c"], cwd=tmp_path / "build",
                            capture_output=True, text=True)  # every op's C: -Wall -Wextra -Werror clean
    assert strict.returncode == 0, strict.stderr
    x = np.zeros(x_shape, np.float32)
    np.testing.assert_allclose(trainer.predict(x), y_ref.detach().numpy(), rtol=1e-5, atol=1e-6)

    loss_ref = torch.nn.functional.mse_loss(y_ref, torch.tensor(target))
    loss_ref.backward()
    before = trainer.get_params()
    loss = trainer.train_step(x, target)
    after = trainer.get_params()
    assert loss == pytest.approx(loss_ref.item(), rel=1e-5, abs=1e-6)
    for name, t in zip(names, t_args):
        if t.ndim == 0:  # rank-0 initializers are constants, not parameters
            assert name not in before
            continue
        grad = before[name] - after[name]
        ref = t.grad.numpy()
        err = np.abs(grad - ref).max()
        print(f"{op} {name}: max |grad - torch| = {err:.2e}")
        np.testing.assert_allclose(grad, ref, rtol=1e-4, atol=1e-5, err_msg=f"{op} gradient of {name}")


# ---- elementwise binary ops with broadcasting ----
BINARY = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}
BROADCAST_SHAPES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 1), (1, 4)), ((2, 3, 4), (3, 1)),
                    ((2, 3, 4), ()), ((5,), (2, 5)), ((2, 1, 3), (4, 1))]


@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize("shapes", BROADCAST_SHAPES, ids=str)
def test_binary(tmp_path, op, shapes):
    a = rand(*shapes[0])
    b = rand(*shapes[1], low=0.5, high=1.5) if op == "Div" else rand(*shapes[1])
    run_case(tmp_path, op, [a, b], BINARY[op])


# ---- activations ----
@pytest.mark.parametrize("shape", [(7,), (4, 9), (2, 3, 5)], ids=str)
@pytest.mark.parametrize("op, attrs, fn", [
    ("Relu", {}, torch.relu),
    ("LeakyRelu", {}, lambda x: torch.nn.functional.leaky_relu(x, 0.01)),
    ("LeakyRelu", {"alpha": 0.2}, lambda x: torch.nn.functional.leaky_relu(x, 0.2)),
    ("Sigmoid", {}, torch.sigmoid),
    ("Tanh", {}, torch.tanh),
], ids=["relu", "leaky_relu", "leaky_relu_0.2", "sigmoid", "tanh"])
def test_activation(tmp_path, shape, op, attrs, fn):
    run_case(tmp_path, op, [rand(*shape, low=-3, high=3)], fn, attrs)


@pytest.mark.parametrize("op, fn", [("Softmax", torch.softmax), ("LogSoftmax", torch.log_softmax)])
@pytest.mark.parametrize("shape, axis", [((4, 10), -1), ((4, 10), 0), ((2, 3, 5), 1), ((2, 3, 5), -1)],
                         ids=str)
def test_softmax(tmp_path, op, fn, shape, axis):
    run_case(tmp_path, op, [rand(*shape, low=-4, high=4)], lambda x: fn(x, axis), {"axis": axis})


# ---- Gemm / MatMul ----
@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("c_shape", [None, (5,), (3, 5), (1, 5), (3, 1), ()], ids=str)
def test_gemm(tmp_path, trans_a, trans_b, c_shape):
    gemm_case(tmp_path, (3, 4, 5), trans_a, trans_b, c_shape, "simd")


# Sizes around the kernels' tiles (4 rows x 8 lanes): full tiles, tails, fewer rows than a tile.
@pytest.mark.parametrize("kernels", sorted(KERNELS))
@pytest.mark.parametrize("trans_a, trans_b", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("mkn", [(9, 19, 13), (1, 8, 16), (6, 33, 3)], ids=str)
def test_gemm_tiles(tmp_path, mkn, trans_a, trans_b, kernels):
    m, _, n = mkn
    gemm_case(tmp_path, mkn, trans_a, trans_b, (m, n), kernels)


def gemm_case(tmp_path, mkn, trans_a, trans_b, c_shape, kernels):
    (m, k, n), alpha, beta = mkn, 0.7, 1.3
    a = rand(*((k, m) if trans_a else (m, k)))
    b = rand(*((n, k) if trans_b else (k, n)))
    operands = [a, b] + ([rand(*c_shape)] if c_shape is not None else [])

    def ref(a, b, c=None):
        y = alpha * ((a.T if trans_a else a) @ (b.T if trans_b else b))
        return y if c is None else y + beta * c

    run_case(tmp_path, "Gemm", operands, ref,
             {"alpha": alpha, "beta": beta, "transA": trans_a, "transB": trans_b}, kernels=kernels)


@pytest.mark.parametrize("a_shape, b_shape", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)),
                                              ((4,), (4, 5)), ((3, 4), (4,)), ((3, 4), (2, 4, 5)),
                                              ((2, 2, 3, 4), (4, 2))], ids=str)
def test_matmul(tmp_path, a_shape, b_shape):
    run_case(tmp_path, "MatMul", [rand(*a_shape), rand(*b_shape)], torch.matmul)


# ---- views ----
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_flatten(tmp_path, axis):
    a = rand(2, 3, 4)
    run_case(tmp_path, "Flatten", [a], lambda t: t.reshape(int(np.prod(a.shape[:axis])), -1), {"axis": axis})


@pytest.mark.parametrize("shape", [[6, 4], [-1, 2], [0, 12], [24]], ids=str)
def test_reshape(tmp_path, shape):
    a = rand(2, 3, 4)
    target = [a.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    run_case(tmp_path, "Reshape", [a], lambda t: t.reshape(target), consts={"shape": np.array(shape, np.int64)})


@pytest.mark.parametrize("op", ["Identity", "Dropout"])
def test_identity_like(tmp_path, op):
    run_case(tmp_path, op, [rand(3, 4)], lambda t: t * 1)
