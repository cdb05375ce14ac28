"""The int8 forward is exact (issue 14, ../shared/DECISIONS.md §4): the C equals a numpy model of
the same integer arithmetic (tests/int8_reference.py, run over the graph the compiler lowered:
the build folder's training_model.onnx) bit for bit, with every kernel set of this host (the
scalar kernels microcontrollers run, and the vector ones: integer sums have no rounding, so
they agree exactly too). The models: test_quantized.py's quantize_static models, every
benchmark-suite model, and a MobileNetV2 width 0.35 (32x32 here, to stay fast). Built with
--train-bias-last 1, so the whole forward is integer (the head too, its bias folded into the
requantization at every step) between the input's QuantizeLinear and the output's
DequantizeLinear: equal float outputs are equal int8 logits."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

import codegen
import int8_reference
from helpers import KERNELS, onnx_model

pytest.importorskip("onnxruntime", reason="onnxruntime's quantize_static makes the quantized models")
from test_quantized import SHAPE, SUITE_NAMES, Branches, Net, quantized_model, quantized_suite_model  # noqa: E402



class MatMulNet(torch.nn.Module):
    """A weight as MatMul's second input (QLinearMatMul: B (K, N), 13 columns, a partial vector)
    between two Linear layers."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(3 * 8 * 8, 37)
        self.w = torch.nn.Parameter(torch.randn(37, 13) / 6)
        self.fc2 = torch.nn.Linear(13, 5)

    def forward(self, x):
        return self.fc2(torch.relu(torch.relu(self.fc1(x.flatten(1))) @ self.w))


QUANTIZED = {"net-s8-per-channel": ("int8", True, Net), "net-u8-per-tensor": ("uint8", False, Net),
             "branches-s8": ("int8", True, Branches), "matmul-s8": ("int8", True, MatMulNet)}
MOBILENET_V2 = "mobilenetv2-0.35"


def _quantized(case: str, folder) -> tuple[str, tuple[int, ...], str, int]:
    """(quantized model, sample shape, loss, batch) of a case."""
    if case in QUANTIZED:
        return quantized_model(folder, *QUANTIZED[case]), SHAPE, "cross_entropy", 7  # row tiles of 4, 2, 1
    if case == MOBILENET_V2:
        from benchmarks.int8_fit import Model, mobilenet_v2

        model = Model(MOBILENET_V2, mobilenet_v2, (3, 32, 32))
        return str(model.quantize(model.export(folder))), model.sample, "cross_entropy", 1
    model = quantized_suite_model(case, folder, np.random.default_rng(8))
    return str(folder / "q.onnx"), model.sample, model.loss, 4


CASES = [*QUANTIZED, *SUITE_NAMES, MOBILENET_V2]
SSE2_CASES = ("lenet5", "mobilenet")  # the x86-64 baseline build of the vector code: a few models suffice


def pytest_generate_tests(metafunc):
    """Every case with the scalar and the host's vector kernels; the SSE2 fallback on SSE2_CASES."""
    if "kernels" in metafunc.fixturenames:
        pairs = [(case, k) for case in CASES for k in KERNELS if k != "sse2" or case in SSE2_CASES]
        metafunc.parametrize("build, kernels", pairs, indirect=["build"], scope="module",
                             ids=[f"{case}-{k}" for case, k in pairs])


@pytest.fixture(scope="module")
def build(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    path, sample, loss, batch = _quantized(request.param, folder)
    codegen.generate(path, folder / "b", loss=loss, batch=batch, train_bias_last=1, lr=0.5)
    return folder / "b", sample, loss, batch


def test_c_forward_equals_numpy_integer_model(build, kernels):
    """Outputs equal bit for bit on random inputs, before and after training steps that move the
    head's float bias (its int32 form follows at every step)."""
    folder, sample, loss, batch = build
    lowered = folder / "training_model.onnx"
    ops = [n.op_type for n in onnx.load(str(lowered)).graph.node]
    assert not {"Conv", "Gemm", "MatMul"} & set(ops) and "QuantizeBias" in ops
    trainer = codegen.load_host(folder, KERNELS[kernels])
    rng = np.random.default_rng(0)
    for step in range(3):
        x = rng.standard_normal((batch, *sample)).astype(np.float32)
        ours, ref = trainer.predict(x), int8_reference.run_graph(lowered, {"x": x, **trainer.get_params()})["y"]
        assert np.array_equal(ours, ref), f"step {step}: {np.count_nonzero(ours != ref)} of {ref.size} differ"
        assert len(np.unique(ref)) > 2  # varied, not saturated
        labels = (rng.integers(0, ref.shape[1], batch).astype(np.int32) if loss == "cross_entropy"
                  else rng.standard_normal(ref.shape).astype(np.float32))
        trainer.train_step(x, labels)


CONVS = {  # name: (input shape, weight shape, attributes): the geometry of each vector path
    "depthwise-stride-2-dilated-asymmetric-pads": ((2, 4, 11, 9), (4, 1, 3, 3),
                                                   {"group": 4, "strides": [2, 2], "dilations": [2, 1],
                                                    "pads": [1, 0, 2, 1]}),
    "one-input-channel-5x4": ((2, 1, 12, 9), (6, 1, 5, 4), {"strides": [2, 1], "pads": [2, 1, 2, 1]}),
    "grouped-3x2-strided": ((2, 6, 7, 10), (4, 3, 3, 2), {"group": 2, "strides": [1, 2], "pads": [1, 1, 0, 0]}),
    "pointwise-1d": ((2, 5, 13), (7, 5, 1), {}),
}


def _conv_model(path, x_shape, w_shape, attrs) -> None:
    """x -> QuantizeLinear -> QLinearConv -> DequantizeLinear (yf) -> + p (a float parameter: a
    trainer). Scales are powers of two, so the multipliers are exact and ties (to even) frequent;
    a few outputs saturate."""
    rng = np.random.default_rng(1)
    m = w_shape[0]
    inits = {"xs": np.float32(0.5), "xz": np.int8(3), "w": rng.integers(-64, 64, w_shape).astype(np.int8),
             "ws": (2.0 ** -rng.integers(1, 4, m)).astype(np.float32), "wz": np.zeros(m, np.int8),
             "ys": np.float32(8.0), "yz": np.int8(-5), "b": rng.integers(-300, 300, m).astype(np.int32),
             "p": np.zeros(1, np.float32)}
    y = int8_reference.conv(np.zeros(x_shape, np.int8), 0, inits["w"], 0, None, 1.0, 1.0, 1.0, 0, **attrs)
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("QLinearConv", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["yq"],
                              kernel_shape=list(w_shape[2:]), **attrs),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["yf"]),
             helper.make_node("Add", ["yf", "p"], ["y"])]
    onnx_model(nodes, {"x": list(x_shape)}, {"y": list(y.shape)}, inits, path=path)


@pytest.mark.parametrize("conv", list(CONVS))
def test_conv_geometries_equal_numpy_integer_model(tmp_path, conv):
    """One QLinearConv per geometry, with rounding ties and saturation: every kernel set equals
    the numpy model exactly."""
    x_shape, w_shape, attrs = CONVS[conv]
    _conv_model(tmp_path / "conv.onnx", x_shape, w_shape, attrs)
    codegen.generate(tmp_path / "conv.onnx", tmp_path / "b", loss="mse", batch=x_shape[0])
    x = (np.random.default_rng(2).standard_normal(x_shape) * 12).astype(np.float32)
    ref = int8_reference.run_graph(tmp_path / "b" / "training_model.onnx", {"x": x}, outputs=("yf",))["yf"]
    for kernels, flags in KERNELS.items():
        assert np.array_equal(codegen.load_host(tmp_path / "b", flags).predict(x), ref), kernels
