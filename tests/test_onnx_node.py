"""ONNX node-test conformance: every node test of the onnx 1.17 data (onnx_node_data.py) whose
single node is an op of our registry compiles and its C forward matches the reference output
(float32, rtol=1e-4, atol=1e-5), or is refused with the message listed in EXPECTED_REFUSALS; a
wrong result is a bug, listed in KNOWN_WRONG. New ops join automatically. Without a reachable
package index (no data) the cases skip with that reason.

A trainer needs a trainable float parameter, so a harness wrapper appends Add(output 0, z), z a
zero initializer of output 0's shape and dtype (float32 for every case that compiles): the
prediction is the op's output exactly. Input 0 is the model input, the other inputs become
initializers (float ones are then parameters; the forward is the same). Only output 0 is
compared: a trainer has one output."""
from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import codegen
from codegen.errors import McutrainError
from helpers import compile_model
from onnx_node_data import Unavailable, node_data

RTOL, ATOL = 1e-4, 1e-5

# The compiler's message (a part of it) -> the cases it must refuse with it.
EXPECTED_REFUSALS: dict[str, list[str]] = {
    # integer tensors: a trainer's inputs are float32
    "only float32 inputs are supported": [
        "test_add_uint8", "test_sub_uint8", "test_mul_uint8", "test_div_uint8", "test_maxpool_2d_uint8",
        "test_clip_default_int8_inbounds", "test_clip_default_int8_inbounds_expanded",
        "test_clip_default_int8_max", "test_clip_default_int8_min",
        "test_edge_pad", "test_reflect_pad", "test_wrap_pad",
        *(f"test_{op}_{t}" for op in ("max", "min")
          for t in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"))],
    # float16/float64 tensors (the second input becomes an initializer): float32 only
    "only float32 parameters are supported": [
        "test_max_float16", "test_max_float64", "test_min_float16", "test_min_float64"],
    # optional and sequence values
    "only float32 tensor inputs are supported": ["test_identity_opt", "test_identity_sequence"],
    # an empty input
    "has dimension 0": ["test_reshape_allowzero_reordered"],
    # volumetric pooling: 1-D and 2-D only
    "over 3 spatial dimensions": [
        "test_averagepool_3d_default", "test_averagepool_3d_dilations_small",
        *(f"test_averagepool_3d_dilations_large_count_include_pad_is_{p}_ceil_mode_is_{c}"
          for p in (0, 1) for c in (False, True)),
        "test_maxpool_3d_default", "test_maxpool_3d_dilations", "test_maxpool_3d_dilations_use_ref_impl",
        "test_maxpool_3d_dilations_use_ref_impl_large"],
    # training-mode statistics and masks
    "BatchNormalization with training_mode=1": [
        "test_batchnorm_epsilon_training_mode", "test_batchnorm_example_training_mode"],
    "Dropout in training mode": [
        "test_training_dropout", "test_training_dropout_default", "test_training_dropout_zero_ratio",
        "test_training_dropout_mask", "test_training_dropout_default_mask", "test_training_dropout_zero_ratio_mask"],
}
REFUSAL = {case: message for message, cases in EXPECTED_REFUSALS.items() for case in cases}

# case -> why the C output is wrong: a compiler bug, to report and fix; xfail(strict) shows the
# fix. Empty: test_logsoftmax_large_number (off by 2.4e-4) was one until softmax.h computed
# (x - max) - log(sum).
KNOWN_WRONG: dict[str, str] = {}


def _op(folder) -> str | None:
    """The op of a single-node model in the default domain, else None."""
    nodes = onnx.load(str(folder / "model.onnx")).graph.node
    return nodes[0].op_type if len(nodes) == 1 and nodes[0].domain in ("", "ai.onnx") else None


def _param(folder):
    wrong = KNOWN_WRONG.get(folder.name)
    marks = [pytest.mark.xfail(strict=True, reason=wrong)] if wrong else []
    return pytest.param(folder, id=folder.name, marks=marks)


def _cases() -> list:
    try:
        root = node_data()
    except Unavailable as e:
        return [pytest.param(None, id="no-data", marks=pytest.mark.skip(reason=str(e)))]
    ours = set(codegen.ops.supported_ops())
    return [_param(f) for f in sorted(root.iterdir()) if _op(f) in ours]


def _read(path, info) -> np.ndarray | None:
    """A tensor value as an array; None for the other kinds (optional, sequence), which the
    compiler refuses before it needs their values."""
    if not info.type.HasField("tensor_type"):
        return None
    return numpy_helper.to_array(onnx.load_tensor(str(path)))


def _wrap(graph, expected: np.ndarray) -> None:
    """Make output 0 + zeros the only output: the zeros are the trainable parameter."""
    out0 = graph.output[0]
    graph.initializer.append(numpy_helper.from_array(np.zeros_like(expected), "harness_zero"))
    graph.node.append(helper.make_node("Add", [out0.name, "harness_zero"], ["harness_out"]))
    out = helper.make_tensor_value_info("harness_out", out0.type.tensor_type.elem_type, expected.shape)
    del graph.output[:]
    graph.output.append(out)


def harness(folder) -> tuple[onnx.ModelProto, np.ndarray | None, np.ndarray | None]:
    """(wrapped model, input 0, reference output 0) of a node-test folder."""
    model = onnx.load(str(folder / "model.onnx"))
    g, data = model.graph, folder / "test_data_set_0"
    values = [_read(data / f"input_{i}.pb", info) for i, info in enumerate(g.input)]
    expected = _read(data / "output_0.pb", g.output[0])
    g.initializer.extend(numpy_helper.from_array(v, i.name) for i, v in zip(g.input[1:], values[1:]))
    del g.input[1:]
    if expected is not None:
        _wrap(g, expected)
    return model, values[0], expected


CASES = _cases()


@pytest.mark.parametrize("folder", CASES)
def test_node(folder, tmp_path):
    model, x, expected = harness(folder)
    path = tmp_path / f"{folder.name}.onnx"
    onnx.save(model, str(path))
    if folder.name in REFUSAL:
        with pytest.raises(McutrainError, match=re.escape(REFUSAL[folder.name])):
            codegen.generate(path, tmp_path / "out", loss="mse", federated=False)
        return
    net = compile_model(path, tmp_path / "out", loss="mse", federated=False)
    np.testing.assert_allclose(net.predict(x), expected, rtol=RTOL, atol=ATOL)


def test_tables_name_found_cases():
    """A renamed or dropped case must leave the tables too, or they would go stale unnoticed."""
    found = {c.id for c in CASES}
    if found == {"no-data"}:
        pytest.skip("no node-test data (test_node says why)")
    assert not (set(REFUSAL) | set(KNOWN_WRONG)) - found
