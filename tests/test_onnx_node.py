"""ONNX node-test conformance: every node test of the onnx 1.17 data (onnx_node_data.py) whose
single node is an op of our registry compiles and its C forward matches the reference output
(float32, rtol=1e-4, atol=1e-5), or is refused with the message listed in EXPECTED_REFUSALS; a
wrong result is a bug, listed in KNOWN_WRONG. New ops join automatically. Without a reachable
package index (no data) the cases skip with that reason.

A trainer needs a trainable float parameter, so a harness wrapper appends Add(output 0, z), z a
float32 zero initializer of output 0's shape (after DequantizeLinear with scale 1 for an int8
output): the prediction is the op's output exactly. Input 0 is the model input, the other inputs become
initializers (float ones are then parameters; the forward is the same); an int8/uint8 input 0
enters as QuantizeLinear(float, scale 1) of its values. Only output 0 is compared: a trainer has
one output."""
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
    # integer data: a trainer's inputs are float32, int8/uint8 ones enter through QuantizeLinear
    # (the harness), then only int8 ops read them
    "runs on float32 here": [
        "test_add_uint8", "test_sub_uint8", "test_mul_uint8", "test_div_uint8",
        "test_clip_default_int8_inbounds",
        "test_clip_default_int8_max", "test_clip_default_int8_min",
        *(f"test_{op}_{t}" for op in ("max", "min") for t in ("int8", "uint8"))],
    "only float32 inputs are supported": [
        "test_edge_pad", "test_reflect_pad", "test_wrap_pad",
        *(f"test_{op}_{t}" for op in ("max", "min") for t in ("int16", "int32", "int64", "uint16", "uint32", "uint64")),
        "test_dequantizelinear_e4m3fn", "test_dequantizelinear_e4m3fn_zero_point", "test_dequantizelinear_e5m2",
        *(f"test_dequantizelinear_{t}" for t in ("int16", "int4", "uint16", "uint4")),
        *(f"test_pow_types_{b}_{e}" for b, e in (("int32", "float32"), ("int32", "int32"), ("int64", "float32"),
                                                 ("int64", "int64"))),
        "test_reduce_max_bool_inputs"],
    # float16/float64 tensors (the second input becomes an initializer): float32 only
    "only float32 parameters are supported": [
        "test_max_float16", "test_max_float64", "test_min_float16", "test_min_float64",
        *(f"test_qlinearmatmul_{r}_{t}_float16" for r in ("2D", "3D") for t in ("int8", "uint8")),
        "test_dequantizelinear_e4m3fn_float16", "test_quantizelinear_e5m2"],
    # quantized data other than int8/uint8 (float8, int4, int16)
    "the int8 path supports int8, uint8 here": [
        f"test_quantizelinear_{t}" for t in ("e4m3fn", "int16", "int4", "uint16", "uint4")],
    "output_dtype 5; only int8 and uint8": ["test_quantizelinear_blocked_symmetric"],
    # activations are quantized per tensor
    "a per-axis scale": ["test_dequantizelinear_axis", "test_dequantizelinear_blocked", "test_quantizelinear_axis",
                         "test_quantizelinear_blocked_asymmetric"],
    # optional and sequence values
    "only float32 tensor inputs are supported": ["test_identity_opt", "test_identity_sequence"],
    # an empty input
    "has dimension 0": ["test_reshape_allowzero_reordered", "test_reduce_sum_empty_set",
                        "test_reduce_sum_empty_set_non_reduced_axis_zero", "test_reduce_max_empty_set",
                        "test_reduce_l2_empty_set"],
    # volumetric pooling: 1-D and 2-D only
    "over 3 spatial dimensions": [
        "test_averagepool_3d_default", "test_averagepool_3d_dilations_small",
        *(f"test_averagepool_3d_dilations_large_count_include_pad_is_{p}_ceil_mode_is_{c}"
          for p in (0, 1) for c in (False, True)),
        "test_maxpool_3d_default", "test_maxpool_3d_dilations", "test_maxpool_3d_dilations_use_ref_impl",
        "test_maxpool_3d_dilations_use_ref_impl_large"],
    # training-mode statistics and masks
    # LSTM without peepholes (PyTorch has none)
    "LSTM with peepholes": ["test_lstm_with_peepholes"],
    # Cast/CastLike (an onnx function test that is one Cast node): training runs in float32, so
    # other types are refused as the model's input (a trainer's input is float32), as a
    # parameter, or as the Cast's target
    "model input 'input' has dtype": [
        *(f"test_cast_{c}" for c in (
            "BFLOAT16_to_FLOAT", "DOUBLE_to_FLOAT", "DOUBLE_to_FLOAT16", "FLOAT16_to_DOUBLE", "FLOAT16_to_FLOAT",
            "INT4_to_FLOAT", "INT4_to_FLOAT16", "INT4_to_INT8", "STRING_to_FLOAT", "UINT4_to_FLOAT",
            "UINT4_to_FLOAT16", "UINT4_to_UINT8",
            *(f"{a}_to_FLOAT{b}" for a in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ")
              for b in ("", "16")),
            *(f"{s}FLOAT16_to_{b}" for s in ("", "no_saturate_")
              for b in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ")),
            "FLOAT16_to_INT4", "FLOAT16_to_UINT4")),
        *(f"test_castlike_{c}_expanded" for c in (
            "BFLOAT16_to_FLOAT", "DOUBLE_to_FLOAT", "FLOAT16_to_FLOAT", "STRING_to_FLOAT",
            *(f"{a}_to_FLOAT" for a in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ"))))],
    "initializer 'like' has dtype": [f"test_castlike_{c}_expanded" for c in (
        "DOUBLE_to_FLOAT16", "FLOAT16_to_DOUBLE", "FLOAT_to_DOUBLE", "FLOAT_to_FLOAT16", "FLOAT_to_FLOAT8E5M2")],
    "(only float32 to float32": [
        *(f"test_cast_{s}FLOAT_to_{b}" for s in ("", "no_saturate_")
          for b in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ")),
        *(f"test_cast_FLOAT_to_{b}" for b in ("BFLOAT16", "DOUBLE", "FLOAT16", "INT4", "STRING", "UINT4")),
        *(f"test_castlike_FLOAT_to_{b}_expanded" for b in (
            "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2FNUZ", "STRING"))],
    # Where's condition is the harness's model input: a trainer's input is float32 (a constant
    # condition is supported)
    "model input 'condition' has dtype bool": ["test_where_example", "test_where_long_example"],
    # integer data (as the model's input: a trainer's input is float32)
    "model input 'data' has dtype int32": ["test_gathernd_example_int32", "test_gathernd_example_int32_batch_dim1"],
    # empty tensors (a zero-length slice or split part)
    "with no elements": ["test_slice_start_out_of_bounds"],
    "model input 'input' has dimension 0": ["test_split_zero_size_splits_opset13", "test_split_zero_size_splits_opset18"],
    # Tile of a 4-D input along every axis: 8 strided dimensions, the kernels take 6
    "whose tiled view has 8 dimensions": ["test_tile"],
}
REFUSAL = {case: message for message, cases in EXPECTED_REFUSALS.items() for case in cases}

# case -> why the C output is wrong: a compiler bug, to report and fix; xfail(strict) shows the
# fix. Empty: test_logsoftmax_large_number (off by 2.4e-4) was one until softmax.h computed
# (x - max) - log(sum).
KNOWN_WRONG: dict[str, str] = {}

# case -> why its reference output cannot be ours: a training-mode Dropout's output is a random draw
# (numpy's stream, np.random.seed(0)); the trainer draws from its own xorshift32 stream (the same
# masks on the host and the boards: codegen/ops/dropout.py, tested in test_train_mode.py) and
# predicts with Dropout as the identity. Checked instead: predict is the input, and the reference
# is the input times 0 or 1 / (1 - ratio) everywhere (the scale rule both follow).
RANDOM_STREAM: dict[str, float] = {  # case -> its ratio
    "test_training_dropout": 0.75, "test_training_dropout_mask": 0.75,
    "test_training_dropout_default": 0.5, "test_training_dropout_default_mask": 0.5}

# case -> why its reference output is wrong; it is compared with onnxruntime's output instead.
ERRATA: dict[str, str] = {
    **{f"test_qlinearmatmul_{r}_int8_float32": "onnx's data has 20 (2D) / 117, 120 (3D) where the sums saturate "
       "to -128, as the spec's formula and onnxruntime give" for r in ("2D", "3D")},
}


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
    """Make output 0 + zeros the only output: the zeros are the trainable parameter. An int8 or
    uint8 output (QuantizeLinear's) is first dequantized with scale 1, zero point 0: its values."""
    out0, name = graph.output[0], graph.output[0].name
    elem_type = out0.type.tensor_type.elem_type
    if expected.dtype in (np.int8, np.uint8):
        graph.initializer.extend([numpy_helper.from_array(np.float32(1), "harness_one"),
                                  numpy_helper.from_array(np.zeros((), expected.dtype), "harness_zp")])
        graph.node.append(helper.make_node("DequantizeLinear", [name, "harness_one", "harness_zp"], ["harness_dq"]))
        name, elem_type = "harness_dq", onnx.TensorProto.FLOAT
    graph.initializer.append(numpy_helper.from_array(np.zeros(expected.shape, np.float32), "harness_zero"))
    graph.node.append(helper.make_node("Add", [name, "harness_zero"], ["harness_out"]))
    out = helper.make_tensor_value_info("harness_out", elem_type, expected.shape)
    del graph.output[:]
    graph.output.append(out)


def _quantized_input(graph, value: np.ndarray) -> np.ndarray:
    """An int8/uint8 input 0 (QLinearConv's x) becomes QuantizeLinear(float x, scale 1, zero point
    0): a trainer's input is float, and its integer values pass exactly."""
    name = graph.input[0].name
    graph.initializer.extend([numpy_helper.from_array(np.float32(1), "harness_in_one"),
                              numpy_helper.from_array(np.zeros((), value.dtype), "harness_in_zp")])
    graph.node.insert(0, helper.make_node("QuantizeLinear", ["harness_x", "harness_in_one", "harness_in_zp"], [name]))
    graph.input[0].CopyFrom(helper.make_tensor_value_info("harness_x", onnx.TensorProto.FLOAT, value.shape))
    return value.astype(np.float32)


def harness(folder) -> tuple[onnx.ModelProto, np.ndarray | None, np.ndarray | None]:
    """(wrapped model, input 0, reference output 0) of a node-test folder."""
    model = onnx.load(str(folder / "model.onnx"))
    g, data = model.graph, folder / "test_data_set_0"
    values = [_read(data / f"input_{i}.pb", info) for i, info in enumerate(g.input)]
    expected = _read(data / "output_0.pb", g.output[0])
    g.initializer.extend(numpy_helper.from_array(v, i.name) for i, v in zip(g.input[1:], values[1:]))
    del g.input[1:]
    if values[0] is not None and values[0].dtype in (np.int8, np.uint8):
        values[0] = _quantized_input(g, values[0])
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
    if folder.name in RANDOM_STREAM:
        np.testing.assert_array_equal(net.predict(x), x)
        scaled = np.float32(x / (1 - RANDOM_STREAM[folder.name]))
        assert np.all((expected == 0) | np.isclose(expected, scaled, rtol=RTOL, atol=ATOL)) and (expected == 0).any()
        return
    if folder.name in ERRATA:
        expected = _onnxruntime(folder)
    np.testing.assert_allclose(net.predict(x), expected, rtol=RTOL, atol=ATOL)


def _onnxruntime(folder) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime (a dev extra) is the reference of the errata")
    model = onnx.load(str(folder / "model.onnx"))
    feeds = {i.name: _read(folder / "test_data_set_0" / f"input_{k}.pb", i) for k, i in enumerate(model.graph.input)}
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(folder / "model.onnx"), options).run(None, feeds)[0]


def test_tables_name_found_cases():
    """A renamed or dropped case must leave the tables too, or they would go stale unnoticed."""
    found = {c.id for c in CASES}
    if found == {"no-data"}:
        pytest.skip("no node-test data (test_node says why)")
    assert not (set(REFUSAL) | set(KNOWN_WRONG) | set(RANDOM_STREAM)) - found
