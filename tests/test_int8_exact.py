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

import codegen
import int8_reference
from helpers import KERNELS

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
