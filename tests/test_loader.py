"""Loading: old opsets upgraded, shape chains folded, batch pinned, parameters found; broken and
invalid models refused with one of our errors (found by tests/test_fuzz.py and by trying each op)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import codegen
from codegen import loader
from codegen.errors import ModelError, ShapeError, UnsupportedError
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
    onnx.save(model, str(tmp_path / "dyn.onnx"))
    graph = loader.load(tmp_path / "dyn.onnx", batch=7)
    assert graph.shape("x") == (7, 6) and graph.shape("y") == (7, 4)


def _refused(tmp_path, model, error, *words):
    """Loading `model` raises `error` (one of ours, exit 2 in the CLI) whose message has `words`."""
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(error) as info:
        loader.load(tmp_path / "m.onnx")
    for word in words:
        assert word in str(info.value), str(info.value)


def test_undefined_input_dtype_is_refused(tmp_path):
    """Was KeyError: 0 (the dtype lookup in the error message itself)."""
    model = classifier(None, 18)
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.UNDEFINED
    _refused(tmp_path, model, UnsupportedError, "'x'", "UNDEFINED", "float32")


@pytest.mark.parametrize("field, message", [("input", "not a valid ONNX model .*UnicodeDecodeError"),
                                            ("name", "not valid UTF-8")])
def test_invalid_utf8_names_are_refused(tmp_path, field, message):
    """A flipped byte left a name invalid UTF-8: onnx's checker raised UnicodeDecodeError quoting an
    undefined input; a node's own name, which it never quotes, reached the C writer as bytes."""
    model = classifier(None, 18)
    if field == "input":
        model.graph.node[1].input[0] = "zz"  # undefined: the checker names it
    else:
        model.graph.node[1].name = "zz"
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString().replace(b"zz", b"\xff\xfe"))
    with pytest.raises(ModelError, match=message):
        loader.load(tmp_path / "m.onnx")


def test_opset_newer_than_onnx_is_refused(tmp_path):
    model = classifier(None, 18)
    model.opset_import[0].version = 10000
    _refused(tmp_path, model, UnsupportedError, "opset 10000", f"up to {onnx.defs.onnx_opset_version()}")


def test_output_that_no_node_computes_is_refused(tmp_path):
    model = classifier(None, 18)
    model.graph.output[0].name = "W"
    _refused(tmp_path, model, ModelError, "model output 'W' is not computed by any node")


def test_local_functions_are_inlined(tmp_path):
    """Was AttributeError: onnx.inliner is a submodule that `import onnx` does not load."""
    relu = helper.make_function("local", "MyRelu", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])],
                                [helper.make_opsetid("", 18)])
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h"], transB=1),
             helper.make_node("MyRelu", ["h"], ["y"], domain="local")]
    model = onnx_model(nodes, {"x": [3, 6]}, {"y": [3, 4]}, {"W": W, "b": B})
    model.functions.append(relu)
    model.opset_import.append(helper.make_opsetid("local", 1))
    onnx.save(model, str(tmp_path / "m.onnx"))
    assert [n.op for n in loader.load(tmp_path / "m.onnx").nodes] == ["Gemm", "Relu"]


# Shapes onnx's strict shape inference lets through and onnxruntime refuses (found by trying each
# supported op's inputs against the spec; the others are refused by shape inference already).
def _node(op, inputs, **attrs):
    return [helper.make_node(op, ["x", *inputs], ["y"], name="n", **attrs)]


INVALID = {  # nodes, x shape, initializers, words of the message
    "gemm_bias": (_node("Gemm", ["W", "c"], transB=1), [3, 6], {"c": np.zeros(3, np.float32)},
                  ["node 'n' (Gemm)", "bias C 'c' of shape [3]", "output shape [3, 4]"]),
    "gemm_bias_rank": (_node("Gemm", ["W", "c"], transB=1), [3, 6], {"c": np.zeros((1, 1, 4), np.float32)},
                       ["bias C 'c' of shape [1, 1, 4]"]),
    "reshape_count": (_node("Reshape", ["s"]), [3, 6], {"s": np.array([4, 5], np.int64)},
                      ["node 'n' (Reshape)", "reshaping [3, 6] (18 elements) to [4, 5] (20 elements)"]),
    "reshape_shape_rank": (_node("Reshape", ["s"]), [3, 6], {"s": np.array([[18]], np.int64)},
                           ["shape 's' of shape [1, 1] is not 1-D"]),
    # was TypeError: iteration over a 0-d array
    "axes_rank": (_node("ReduceMean", ["a"]), [3, 6], {"a": np.array(1, np.int64)}, ["axes 'a' of shape [] is not 1-D"]),
    "clip_min_rank": (_node("Clip", ["lo"]), [3, 6], {"lo": np.zeros((1, 1), np.float32)},
                      ["min 'lo' of shape [1, 1] is not a scalar"]),
    # onnx reads 2 as true (no reduction), onnxruntime as false (all axes)
    "boolean_attribute": (_node("ReduceMean", ["a"], noop_with_empty_axes=2), [3, 6], {"a": np.zeros(0, np.int64)},
                          ["noop_with_empty_axes=2 (a boolean: 0 or 1)"]),
    "dropout_ratio": (_node("Dropout", ["ratio"]), [3, 6], {"ratio": np.float32(1.5)},
                      ["node 'n' (Dropout)", "ratio of 1.5"]),
    # was ZeroDivisionError
    "conv_group_zero": (_node("Conv", ["K"], group=0), [1, 2, 5, 5], {"K": np.ones((4, 2, 3, 3), np.float32)},
                        ["node 'n' (Conv)", "group 0 with input [1, 2, 5, 5]"]),
    "empty_output": (_node("Pad", ["p"]), [3, 6], {"p": np.array([0, -3, 0, -3], np.int64)},
                     ["node 'n' (Pad)", "output 'y' would have shape [3, 0]"]),
    "negative_output": (_node("Pad", ["p"]), [3, 6], {"p": np.array([0, -4, 0, -4], np.int64)},
                        ["output 'y' would have shape [3, -2]"]),
}


@pytest.mark.parametrize("case", INVALID)
def test_invalid_shapes_are_refused(tmp_path, case):
    nodes, x_shape, inits, words = INVALID[case]
    model = onnx_model(nodes, {"x": x_shape}, {"y": [1]}, {"W": W, **inits})
    _refused(tmp_path, model, ShapeError, *words)


def test_huge_folded_constant_is_refused_before_evaluation(tmp_path):
    """ConstantOfShape([10**9]) is refused from its inferred shape, never allocated."""
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"], name="huge"),
             helper.make_node("ReduceMean", ["big"], ["m"], keepdims=1),
             helper.make_node("Mul", ["x", "m"], ["y0"]), helper.make_node("Mul", ["y0", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                              [numpy_helper.from_array(np.array([10**9], np.int64), "shape"),
                               numpy_helper.from_array(np.ones(3, np.float32), "w")])
    path = tmp_path / "m.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())
    with pytest.raises(ShapeError, match=r"node 'huge' \(ConstantOfShape\).*\[1000000000\]"):
        loader.load(path)


def test_folded_weights_are_parameters(tmp_path):
    """A layer's weight and bias computed from constants (ConstantOfShape, as in the ONNX model-zoo
    light graphs; a Constant node) are trained like initializers; a folded value added elsewhere
    stays a constant."""
    fill = helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5])
    nodes = [helper.make_node("Concat", ["rows", "cols"], ["wshape"], axis=0),  # folded in W's round
             helper.make_node("ConstantOfShape", ["wshape"], ["W"], value=fill),
             helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(B)),
             helper.make_node("ConstantOfShape", ["bshape"], ["s"], value=fill),
             helper.make_node("Gemm", ["x", "W", "b"], ["h"], transB=1), helper.make_node("Add", ["h", "s"], ["y"])]
    onnx_model(nodes, {"x": [3, 6]}, {"y": [3, 4]}, {"rows": np.array([4]), "cols": np.array([6]), "bshape": np.array([4])},
               path=tmp_path / "m.onnx")
    roles = {n: t.role for n, t in loader.load(tmp_path / "m.onnx").tensors.items()}
    assert (roles["W"], roles["b"], roles["s"]) == (PARAM, PARAM, CONST)
    report = codegen.inspect(tmp_path / "m.onnx")  # folds as generate does
    assert report.unsupported == [] and [p["name"] for p in report.params] == ["W", "b"]
    trainer = compile_model(tmp_path / "m.onnx", tmp_path / "out", loss="mse", lr=0.1)
    before = trainer.get_params()
    trainer.train_step(RNG.normal(size=(3, 6)).astype(np.float32), np.zeros((3, 4), np.float32))
    after = trainer.get_params()
    assert sorted(before) == ["W", "b"] and np.array_equal(before["b"], B)
    assert all(not np.allclose(before[n], after[n]) for n in before)


@pytest.mark.parametrize("op, attrs, second", [("Dropout", {}, "mask"), ("MaxPool", {"kernel_shape": [2]}, "indices")])
def test_optional_outputs_need_support_only_when_read(tmp_path, op, attrs, second):
    """A Dropout mask or MaxPool Indices that nothing reads is dropped; one that is read (here a
    model output) is refused."""
    nodes = [helper.make_node("Mul", ["x", "w"], ["h"]), helper.make_node(op, ["h"], ["y", second], **attrs)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4 if op == "Dropout" else 3])],
                              [numpy_helper.from_array(np.ones(4, np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(tmp_path / "quiet.onnx"))
    compile_model(tmp_path / "quiet.onnx", tmp_path / "b", loss="mse")
    kind = TensorProto.BOOL if op == "Dropout" else TensorProto.INT64
    model.graph.output.append(helper.make_tensor_value_info(second, kind, [1, 2, 4 if op == "Dropout" else 3]))
    onnx.save(model, str(tmp_path / "read.onnx"))
    with pytest.raises(UnsupportedError, match=f"{op}.*(mask|Indices) output"):
        loader.load(tmp_path / "read.onnx")
