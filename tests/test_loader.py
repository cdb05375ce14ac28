"""Loading: old opsets upgraded, shape chains folded, batch pinned, parameters found."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from codegen import loader
from codegen.errors import UnsupportedError
from codegen.ir import CONST, PARAM
from helpers import compile_model, onnx_model

RNG = np.random.default_rng(3)
W = RNG.normal(size=(4, 6)).astype(np.float32)
B = RNG.normal(size=(4,)).astype(np.float32)


def classifier(path, opset):
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h"], transB=1),
             helper.make_node("Dropout", ["h"], ["d"]),
             helper.make_node("Softmax", ["d"], ["y"], axis=1)]
    return onnx_model(nodes, {"x": [3, 6]}, {"y": [3, 4]}, {"W": W, "b": B}, opset=opset, path=path)


@pytest.mark.parametrize("opset", [9, 11, 13])
def test_old_opsets_are_upgraded_and_train_the_same(tmp_path, opset):
    classifier(tmp_path / "old.onnx", opset)
    classifier(tmp_path / "new.onnx", 18)
    old = compile_model(tmp_path / "old.onnx", tmp_path / "b_old", loss="mse", lr=0.5)
    new = compile_model(tmp_path / "new.onnx", tmp_path / "b_new", loss="mse", lr=0.5)
    for _ in range(5):
        x, y = RNG.normal(size=(3, 6)).astype(np.float32), RNG.uniform(size=(3, 4)).astype(np.float32)
        assert old.train_step(x, y) == new.train_step(x, y)


def test_unconvertible_opset_is_refused(tmp_path, monkeypatch):
    def fail(model, target):
        raise RuntimeError("No Adapter For Upsample")

    monkeypatch.setattr(loader.version_converter, "convert_version", fail)
    classifier(tmp_path / "m.onnx", 9)
    with pytest.raises(UnsupportedError, match="opset 9 .* cannot upgrade it to opset 18 .*No Adapter"):
        loader.load(tmp_path / "m.onnx")


def test_shape_chain_is_folded(tmp_path):
    """The old torch flatten idiom: Reshape(x, Concat(Gather(Shape(x), 0), [-1]))."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["flat"]),
             helper.make_node("Gemm", ["flat", "W", "b"], ["y"], transB=1)]
    inits = {"W": W, "b": B, "zero": np.array(0, np.int64), "axes": np.array([0], np.int64),
             "minus1": np.array([-1], np.int64)}
    onnx_model(nodes, {"x": [3, 2, 3]}, {"y": [3, 4]}, inits, path=tmp_path / "m.onnx")
    graph = loader.load(tmp_path / "m.onnx")
    assert [n.op for n in graph.nodes] == ["Reshape", "Gemm"]
    assert graph.tensors["shape"].role == CONST
    assert list(graph.tensors["shape"].value) == [3, -1]
    trainer = compile_model(tmp_path / "m.onnx", tmp_path / "b", loss="mse")
    x = RNG.normal(size=(3, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(trainer.predict(x), x.reshape(3, 6) @ W.T + B, rtol=1e-5, atol=1e-6)


def test_parameters_are_float_tensors_feeding_differentiable_slots(tmp_path):
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h"], transB=1),
             helper.make_node("Mul", ["h", "half"], ["y"])]
    onnx_model(nodes, {"x": [3, 6]}, {"y": [3, 4]}, {"W": W, "b": B, "half": np.array(0.5, np.float32)},
               path=tmp_path / "m.onnx")
    graph = loader.load(tmp_path / "m.onnx")
    assert [t.name for t in graph.of_role(PARAM)] == ["W", "b"]
    assert graph.tensors["half"].role == CONST


def test_batch_is_pinned(tmp_path):
    classifier(tmp_path / "m.onnx", 18)
    model = classifier(None, 18)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    import onnx

    onnx.save(model, str(tmp_path / "dyn.onnx"))
    graph = loader.load(tmp_path / "dyn.onnx", batch=7)
    assert graph.shape("x") == (7, 6) and graph.shape("y") == (7, 4)
