"""Bad input gives one clear message naming the culprit, exit code 2, and writes nothing."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from typer.testing import CliRunner

from codegen.cli import app
from helpers import onnx_model

RNG = np.random.default_rng(0)


def mlp_model(path, batch=4, dtype=np.float32, extra_nodes=(), out="y"):
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["y"]), *extra_nodes]
    return onnx_model(nodes, {"x": [batch, 8]}, {out: [batch, 3]},
                      {"W": RNG.normal(size=(3, 8)).astype(dtype), "b": np.zeros(3, dtype)}, path=path)


def run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.onnx"
    mlp_model(path)
    return path


def expect_error(tmp_path, args, *needles):
    code, out = run(*args)
    assert code == 2, out
    assert "error:" in out and "Traceback" not in out
    flat = " ".join(out.split())
    for needle in needles:
        assert needle in flat, flat
    assert not (tmp_path / "out").exists(), "nothing may be written on error"


def test_missing_file(tmp_path):
    expect_error(tmp_path, ["generate", tmp_path / "nope.onnx", "-o", tmp_path / "out"], "nope.onnx", "not found")


def test_not_onnx(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(RNG.bytes(300))
    expect_error(tmp_path, ["generate", bad, "-o", tmp_path / "out"], "bad.onnx", "ONNX")


def test_unsupported_op(tmp_path):
    path = tmp_path / "m.onnx"
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h"], transB=1, name="fc"),
             helper.make_node("Cos", ["h"], ["y"], name="weird")]
    onnx_model(nodes, {"x": [4, 8]}, {"y": [4, 3]},
               {"W": RNG.normal(size=(3, 8)).astype(np.float32), "b": np.zeros(3, np.float32)}, path=path)
    expect_error(tmp_path, ["generate", path, "-o", tmp_path / "out"],
                 "'weird'", "Cos", "not supported", "Supported ops:", "Gemm")


def test_dynamic_batch_needs_batch_option(tmp_path):
    path = tmp_path / "m.onnx"
    mlp_model(path, batch="N")
    expect_error(tmp_path, ["generate", path, "-o", tmp_path / "out"], "'x'", "dynamic batch", "--batch")
    code, out = run("generate", path, "-o", tmp_path / "ok", "--batch", 5)
    assert code == 0, out
    assert "#define M_BATCH 5" in (tmp_path / "ok" / "m.h").read_text()


def test_non_float32_parameters(tmp_path):
    path = tmp_path / "m.onnx"
    mlp_model(path, dtype=np.float64)
    expect_error(tmp_path, ["generate", path, "-o", tmp_path / "out"], "'W'", "float64", "float32")


def test_unknown_loss(tmp_path, good):
    """--loss is a choice of the loss registry: refused while parsing, the choices named."""
    code, out = run("generate", good, "-o", tmp_path / "out", "--loss", "hinge")
    flat = " ".join(out.replace("│", " ").split())
    assert code == 2 and "Traceback" not in out, out
    assert "Invalid value for '--loss'" in flat and "'hinge' is not one of" in flat and "'cross_entropy'" in flat
    assert not (tmp_path / "out").exists()


def test_pattern_matching_nothing(tmp_path, good):
    expect_error(tmp_path, ["generate", good, "-o", tmp_path / "out", "--train", "conv*"],
                 "'conv*' matches no parameter", "W, b")


def test_label_shape_mismatch(tmp_path, good):
    assert run("generate", good, "-o", tmp_path / "build", "--loss", "cross_entropy")[0] == 0
    data = tmp_path / "d.npz"
    np.savez(data, x=RNG.normal(size=(16, 8)).astype(np.float32), y=np.zeros((16, 3)))  # one-hot, not ints
    code, out = run("train", tmp_path / "build", "--data", data)
    assert code == 2 and "labels must have shape (16,)" in " ".join(out.split()), out


def test_labels_out_of_range(tmp_path, good):
    assert run("generate", good, "-o", tmp_path / "build", "--loss", "cross_entropy")[0] == 0
    data = tmp_path / "d.npz"
    np.savez(data, x=RNG.normal(size=(16, 8)).astype(np.float32), y=np.full(16, 7))
    code, out = run("train", tmp_path / "build", "--data", data)
    assert code == 2 and "[0, 3)" in out, out


def test_failed_run_keeps_earlier_outputs(tmp_path, good):
    assert run("generate", good, "-o", tmp_path / "out")[0] == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    code, _ = run("generate", good, "-o", tmp_path / "out", "--loss", "hinge")
    assert code == 2
    after = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    assert before == after
