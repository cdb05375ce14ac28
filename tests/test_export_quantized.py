"""`export` of a quantized build (issue 14): the QDQ model with the trained float parts runs in
onnxruntime with the C's predictions, within one output quantization step per element. A trained
weight becomes a float initializer; a trained bias of an int8 layer keeps its int32 QDQ form (the
integers the C adds); everything untrained is byte-identical to the source."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from typer.testing import CliRunner

import codegen
from codegen import calibrate, export, loader, manifest
from codegen.cli import app
from codegen.ops._qlinear import BIAS_LIMIT
from helpers import export_torch
from test_quantized import SHAPE, Net, inputs, onnxruntime, qdq  # noqa: F401 (qdq: the fixture)

SELECTIONS = {"head": {"train_last": 1}, "biases": {"train_bias_last": 2},
              "head+biases": {"train_last": 1, "train_bias_last": 2}}


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> Path:
    """A float model (float.onnx), its calibration inputs (calib.npz) and the QDQ model `generate
    --quantize int8` compiles (q.onnx: onnxruntime's form)."""
    folder = tmp_path_factory.mktemp("calibrated")
    torch.manual_seed(0)
    export_torch(Net(), torch.zeros(1, *SHAPE), folder / "float.onnx", dynamo=False, batch_dynamic=True)
    np.savez(folder / "calib.npz", x=inputs(16, 1))
    source = loader.upgraded(folder / "float.onnx")
    onnx.save(calibrate.quantize_model(source, calibrate.read_calibration(folder / "calib.npz", source)),
              str(folder / "q.onnx"))
    return folder


def trained(build: Path, **selection) -> codegen.HostTrainer:
    """Generated with `selection`, 10 SGD steps on random data."""
    codegen.generate(selection.pop("model"), build, loss="cross_entropy", batch=4, lr=0.1, **selection)
    trainer = codegen.load_host(build)
    rng = np.random.default_rng(0)
    for _ in range(10):
        trainer.train_step(rng.standard_normal((4, *SHAPE)).astype(np.float32), rng.integers(0, 4, 4).astype(np.int32))
    return trainer


def agrees(trainer: codegen.HostTrainer, exported: Path, source: Path) -> None:
    """onnxruntime on the export: the C's predictions within one output step; on the source: not."""
    onnx.checker.check_model(onnx.load(str(exported)), full_check=True)
    x = inputs(32, 5)
    ours = np.concatenate([trainer.predict(b) for b in np.split(x, 8)])
    step = output_step(source)
    assert np.abs(ours - onnxruntime(str(exported), x)).max() <= step * 1.001
    assert np.abs(ours - onnxruntime(str(source), x)).max() > 4 * step, "export must carry the trained weights"


def output_step(path: Path) -> float:
    """The scale of the DequantizeLinear that writes the model's output."""
    graph = onnx.load(str(path)).graph
    dq = next(n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] == graph.output[0].name)
    return float(next(numpy_helper.to_array(i) for i in graph.initializer if i.name == dq.input[1]))


def _initializers(path: Path) -> dict[str, onnx.TensorProto]:
    return {i.name: i for i in onnx.load(str(path)).graph.initializer}


@pytest.mark.parametrize("selection", SELECTIONS.values(), ids=SELECTIONS.keys())
def test_export_runs_in_onnxruntime_as_the_c(qdq, tmp_path, selection):
    trainer = trained(tmp_path / "b", model=qdq, **selection)
    trainer.export_onnx(tmp_path / "e.onnx")
    agrees(trainer, tmp_path / "e.onnx", Path(qdq))
    source, out = _initializers(Path(qdq)), _initializers(tmp_path / "e.onnx")
    params = trainer.get_params()
    for name, init in source.items():  # untrained: unchanged; scales and zero points: never changed
        if not any(name.startswith(f"{p}_") for p in params) or name in out and not name.endswith("_quantized"):
            assert out[name].SerializeToString() == init.SerializeToString(), f"{name} changed"
    for name in params:  # a trained weight: a float initializer; a bias: the int32 form in an int8 layer
        layer_is_int8 = name.endswith(".bias") and f"{name[:-4]}weight" not in params
        assert (name in out, f"{name}_quantized" in out) == (not layer_is_int8, layer_is_int8)
        if layer_is_int8:  # holding what the C adds (onnxruntime's bias scale is x_scale * w_scale)
            ints, scale = (numpy_helper.to_array(out[f"{name}_quantized{s}"]) for s in ("", "_scale"))
            assert ints.dtype == np.int32 and f"{name}_quantized_zero_point" in out
            assert not np.array_equal(ints, numpy_helper.to_array(source[f"{name}_quantized"]))
            np.testing.assert_array_equal(ints, np.rint(params[name] / scale))
        else:
            np.testing.assert_array_equal(numpy_helper.to_array(out[name]), params[name])

def test_int32_bias_saturates_and_initial_params(calibrated, tmp_path):
    """A bias beyond BIAS_LIMIT at its scale (or NaN) saturates as mt_quantize_bias does; a quantized build's
    weights as generated (`delta`'s default base) are the dequantized constants the C starts from."""
    trainer = trained(tmp_path / "b", model=calibrated / "q.onnx", train_bias_last=1)
    start = export.initial_params(tmp_path / "b", manifest.read(tmp_path / "b"))
    np.testing.assert_array_equal(start["fc.bias"], codegen.load_host(tmp_path / "b").get_params()["fc.bias"])
    huge = np.array([1e30, -1e30, np.nan, 0], np.float32)
    export.export_onnx(tmp_path / "b", {**trainer.get_params(), "fc.bias": huge}, tmp_path / "e.onnx")
    ints = numpy_helper.to_array(_initializers(tmp_path / "e.onnx")["fc.bias_quantized"])
    assert ints.tolist() == [BIAS_LIMIT, -BIAS_LIMIT, -BIAS_LIMIT, 0]


def test_calibrated_build_exports(calibrated, tmp_path):
    """A build of `generate --quantize int8 --calibration` exports (the CLI, from a parameter blob)."""
    trainer = trained(tmp_path / "b", model=calibrated / "float.onnx", quantize="int8",
                      calibration=calibrated / "calib.npz", train_last=1, train_bias_last=2)
    (tmp_path / "p.bin").write_bytes(trainer.save_params())
    done = CliRunner().invoke(app, ["export", str(tmp_path / "b"), "--params", str(tmp_path / "p.bin"),
                                    "-o", str(tmp_path / "e.onnx")])
    assert done.exit_code == 0, done.output
    agrees(trainer, tmp_path / "e.onnx", tmp_path / "b" / export.SOURCE_MODEL)


def test_bias_at_another_scale_exports_float(calibrated, tmp_path):
    """A bias stored at a scale other than x_scale * w_scale (not onnxruntime's rule): the C's
    integers cannot be written at it, so the trained float bias replaces its DequantizeLinear."""
    model = onnx.load(str(calibrated / "q.onnx"))
    scale = next(i for i in model.graph.initializer if i.name == "fc.bias_quantized_scale")
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(1.5), scale.name))
    onnx.save(model, str(tmp_path / "q.onnx"))
    trainer = trained(tmp_path / "b", model=tmp_path / "q.onnx", train_bias_last=1)
    trainer.export_onnx(tmp_path / "e.onnx")
    agrees(trainer, tmp_path / "e.onnx", tmp_path / "q.onnx")
    out = _initializers(tmp_path / "e.onnx")
    assert "fc.bias_quantized" not in out
    np.testing.assert_array_equal(numpy_helper.to_array(out["fc.bias"]), trainer.get_params()["fc.bias"])
