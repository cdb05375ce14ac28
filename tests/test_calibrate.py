"""generate --quantize int8 --calibration (issue 14, a float model quantized by mcutrain):
codegen/calibrate.py writes the QDQ model onnxruntime's quantize_static writes (same nodes, scales,
zero points and integers), which runs in onnxruntime close to the float model; bad calibration
files and option mixes are refused with one message, nothing written."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from typer.testing import CliRunner

import codegen
from codegen import calibrate, loader
from codegen.cli import app
from codegen.errors import OptionError
from helpers import compile_model, onnx_model

ort = pytest.importorskip("onnxruntime", reason="onnxruntime (a dev extra) is the oracle of quantized models")
from onnxruntime import quantization as ortq  # noqa: E402

SHAPE = (3, 8, 8)


class Net(torch.nn.Module):
    """Every op the int8 path runs: conv+ReLU, depthwise+ReLU6, pointwise + residual Add, max and
    average pooling, Concat, global average, Flatten, a Linear (Gemm) and a MatMul head."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.c3 = torch.nn.Conv2d(8, 8, 1)
        self.fc = torch.nn.Linear(16, 6)
        self.w = torch.nn.Parameter(torch.randn(6, 4) / 3)

    def forward(self, x):
        y = torch.relu(self.c1(x))
        z = torch.nn.functional.max_pool2d(self.c3(torch.nn.functional.relu6(self.c2(y))) + y, 2)
        u = torch.cat([z, torch.nn.functional.avg_pool2d(y, 2)], 1)
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(u, 1).flatten(1)) @ self.w


def samples(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SHAPE)).astype(np.float32)


class _Reader(ortq.CalibrationDataReader):
    def __init__(self, x: np.ndarray):
        self.batches = iter([{"x": s[None]} for s in x])

    def get_next(self):
        return next(self.batches, None)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The float model, the calibration file (a `train --data`-style 'x'), our QDQ model and
    onnxruntime's (MinMax, int8 activations and per-channel weights) from the same samples."""
    folder = tmp_path_factory.mktemp("calibrate")
    torch.manual_seed(0)
    torch.onnx.export(Net().eval(), torch.zeros(1, *SHAPE), str(folder / "float.onnx"), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}}, opset_version=18, dynamo=False)
    x = samples(16, 1)
    np.savez(folder / "calib.npz", x=x, y=np.zeros(16))
    source = loader.upgraded(folder / "float.onnx")
    ours = calibrate.quantize_model(source, calibrate.read_calibration(folder / "calib.npz", source))
    onnx.save(ours, str(folder / "ours.onnx"))
    ortq.quantize_static(str(folder / "float.onnx"), str(folder / "ort.onnx"), _Reader(x),
                         quant_format=ortq.QuantFormat.QDQ, per_channel=True,
                         activation_type=ortq.QuantType.QInt8, weight_type=ortq.QuantType.QInt8,
                         calibrate_method=ortq.CalibrationMethod.MinMax)
    return folder


def run(path, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options).run(None, {"x": x})[0]


def _nodes(model: onnx.ModelProto) -> Counter:
    """Nodes by op, inputs, outputs and attributes (onnxruntime leaves a removed Clip's bounds behind)."""
    return Counter((n.op_type, tuple(n.input), tuple(n.output), str(sorted(
        (a.name, helper.get_attribute_value(a)) for a in n.attribute))) for n in model.graph.node
        if n.op_type != "Constant")


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_same_model_as_onnxruntime(models):
    """Relu/Clip folded, the same Q/DQ pairs (MaxPool, AveragePool, Flatten sharing their input's),
    the same scales and zero points (activations within float32 rounding of the ranges), integer
    weights and biases."""
    ours, theirs = onnx.load(str(models / "ours.onnx")), onnx.load(str(models / "ort.onnx"))
    assert _nodes(ours) == _nodes(theirs)
    mine, ref = _initializers(ours), _initializers(theirs)
    assert sorted(mine) == sorted(ref)
    assert any(name.endswith("bias_quantized") for name in mine) and "w_scale" in mine
    for name, value in mine.items():
        assert value.dtype == ref[name].dtype and value.shape == ref[name].shape, name
        if value.dtype == np.float32:
            np.testing.assert_allclose(value, ref[name], rtol=1e-6, err_msg=name)
        else:  # a bias's scale follows its input's: one level apart at most
            assert np.abs(value.astype(np.int64) - ref[name]).max() <= (1 if value.dtype == np.int32 else 0), name


def test_close_to_the_float_model(models):
    """In onnxruntime: within one output step of onnxruntime's own quantization; within a few
    steps of the float model on the calibration samples (held-out ones may leave the calibrated
    ranges and saturate), the same class for nearly every held-out sample."""
    step = float(_initializers(onnx.load(str(models / "ours.onnx")))["y_scale"])
    for x in samples(16, 1), samples(64, 2):
        ours, theirs = run(models / "ours.onnx", x), run(models / "ort.onnx", x)
        assert np.abs(ours - theirs).max() <= step * 1.001
    exact = run(models / "float.onnx", x)
    assert np.mean(ours.argmax(1) == exact.argmax(1)) >= 0.9
    calibrated = samples(16, 1)
    error = np.abs(run(models / "ours.onnx", calibrated) - run(models / "float.onnx", calibrated)).max()
    print(f"max |int8 - float| = {error / step:.2f} output steps on the calibration samples")
    assert error <= 3 * step


def mlp(path):
    """Two inputs of fixed batch 4 added, then a Gemm."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Gemm", ["s", "W", "c"], ["y"], transB=1)]
    return onnx_model(nodes, {"a": [4, 8], "b": [4, 8]}, {"y": [4, 3]},
                      {"W": rng.normal(size=(3, 8)).astype(np.float32), "c": np.zeros(3, np.float32)}, path=path)


GOOD = np.ones((8, 8), np.float32)


@pytest.mark.parametrize("arrays, message", [
    ({"a": GOOD}, "has no array for model input 'b': save one named 'b' with numpy.savez (the file has ['a'])"),
    ({"x": GOOD, "b": GOOD}, "has no array for model input 'a'"),
    ({"a": GOOD, "b": np.ones((8, 9), np.float32)}, "array 'b' has shape (8, 9), expected (N, 8)"),
    ({"a": GOOD, "b": np.ones(8, np.float32)}, "array 'b' has shape (8,), expected (N, 8)"),
    ({"a": GOOD, "b": np.ones((8, 8), np.int64)}, "array 'b' has dtype int64; save float samples"),
    ({"a": GOOD, "b": np.full((8, 8), np.nan, np.float32)}, "array 'b' has 64 NaN or infinite values"),
    ({"a": GOOD[:6], "b": GOOD[:6]}, "array 'a' has 6 samples; the model's batch dim is 4"),
    ({"a": GOOD, "b": GOOD[:4]}, "the inputs have different numbers of samples {'a': 8, 'b': 4}"),
])
def test_bad_calibration_refused(tmp_path, arrays, message):
    mlp(tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", **arrays)
    with pytest.raises(OptionError) as e:
        codegen.generate(tmp_path / "m.onnx", tmp_path / "out", quantize="int8", calibration=tmp_path / "c.npz")
    assert message in str(e.value)
    assert not (tmp_path / "out").exists()


def test_non_finite_range_refused(tmp_path):
    """A quantized tensor that reaches NaN on the samples (here Log of negative values) has no range."""
    nodes = [helper.make_node("Log", ["x"], ["l"]), helper.make_node("Gemm", ["l", "W"], ["y"], transB=1)]
    onnx_model(nodes, {"x": [4, 8]}, {"y": [4, 3]}, {"W": np.ones((3, 8), np.float32)}, path=tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", x=-GOOD)
    with pytest.raises(OptionError, match="tensor 'l' reaches NaN or infinity on the calibration data"):
        codegen.generate(tmp_path / "m.onnx", tmp_path / "out", quantize="int8", calibration=tmp_path / "c.npz")


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_options(models, tmp_path):
    """--quantize needs --calibration and the reverse; only int8; an already quantized model is
    refused: exit 2, one message, nothing written."""
    float_model, calib = models / "float.onnx", models / "calib.npz"
    cases = [([float_model, "--quantize", "int8"], "--quantize int8 needs --calibration FILE"),
             ([float_model, "--calibration", calib], "--calibration is only used with --quantize int8"),
             ([float_model, "--quantize", "int4", "--calibration", calib], "'int4' is not"),  # click: "(one of) 'int8'"
             ([models / "ort.onnx", "--quantize", "int8", "--calibration", calib],
              "is already quantized (it has DequantizeLinear nodes)")]
    for args, message in cases:
        result = invoke("generate", *args, "-o", tmp_path / "out")
        assert result.exit_code == 2 and message in " ".join(result.output.replace("│", " ").split()), result.output
        assert not (tmp_path / "out").exists()


def test_generate_quantizes_then_compiles(models, tmp_path):
    """generate --quantize int8 writes quantized_model.onnx (the model it compiled, also its
    model.onnx), and the trainer's forward agrees with onnxruntime on that file within one output
    quantization step."""
    trainer = compile_model(models / "float.onnx", tmp_path / "b", loss="cross_entropy", train_last=1, batch=8,
                            quantize="int8", calibration=models / "calib.npz")
    written = tmp_path / "b" / calibrate.QUANTIZED_MODEL
    assert written.read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes() == (models / "ours.onnx").read_bytes()
    x = samples(32, 2)
    ours = np.concatenate([trainer.predict(b) for b in np.split(x, 4)])
    step = float(_initializers(onnx.load(str(written)))["y_scale"])
    assert np.abs(ours - run(written, x)).max() <= step * 1.001
