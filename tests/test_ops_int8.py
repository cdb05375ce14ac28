"""The int8 ops of frozen quantized layers (QLinearConv, QLinearMatMul, QGemm, QLinearAdd,
QLinear(Global)AveragePool, QLinearConcat, MaxPool on int8) in the generated C.

How a case runs: a one-op QOperator model, float x -> QuantizeLinear -> the op -> DequantizeLinear
-> Add(p) with p a zero float32 parameter (a trainer needs one), compiled with the scalar kernels
(the int8 kernels have only portable scalar code). x is made of exact quantization levels. The
prediction must equal the numpy reference of the same integer arithmetic (tests/int8_reference.py)
bit for bit, and lie within one output quantization step of onnxruntime on the same model (it
rounds half to even in float where we round half up in fixed point)."""
from __future__ import annotations

import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import int8_reference as ref
import codegen
from codegen import requant
from codegen.errors import UnsupportedError
from helpers import KERNELS, STRICT, compile_model

RNG = np.random.default_rng(14)
MS = "com.microsoft"
X_SCALE, X_ZP = np.float32(0.05), np.int8(-3)


def levels(*shape, zp=X_ZP, low=-128, high=127):
    """Integers of a quantized tensor and the float32 values that quantize exactly to them."""
    q = RNG.integers(low, high + 1, size=shape).astype(np.int8)
    return q, ref.dequantize(q, X_SCALE, zp)


def spread(terms: int, scale) -> np.float32:
    """An output scale for sums of `terms` products of uniform int8 levels (std ~74 each) at real
    scale `scale`: about 3 standard deviations span the int8 range, a few outputs saturate."""
    return np.float32(3 * np.sqrt(terms) * 74 * 74 * float(np.mean(scale)) / 127)


def same_upper_pads(x_shape, kernel, strides):
    """ONNX pads of auto_pad SAME_UPPER: output ceil(size / stride), the odd pad at the end."""
    totals = [max(0, (-(-n // s) - 1) * s + k - n) for n, k, s in zip(x_shape[2:], kernel, strides)]
    return [t // 2 for t in totals] + [t - t // 2 for t in totals]


def one_op_model(tmp_path, node, x_shape, y_shape, y_scale, y_zp, inits: dict, x_q=(X_SCALE, X_ZP)):
    """x -> Q (x_q: scale, zero point) -> node ('xq' -> 'yq') -> DQ -> + p, saved as op.onnx."""
    inits = {"x_scale": x_q[0], "x_zp": x_q[1], "y_scale": np.float32(y_scale), "y_zp": y_zp,
             "p": np.zeros(y_shape, np.float32), **inits}
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"]), node,
             helper.make_node("DequantizeLinear", ["yq", "y_scale", "y_zp"], ["yf"]),
             helper.make_node("Add", ["yf", "p"], ["y"])]
    graph = helper.make_graph(nodes, "int8", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(y_shape))],
                              [numpy_helper.from_array(np.asarray(v), n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)])
    onnx.save(model, str(tmp_path / "op.onnx"))
    return model


def run(tmp_path, node, x, y_q, y_scale, y_zp, inits: dict, x_q=(X_SCALE, X_ZP), exact=True):
    """Compile the one-op model; compare with y_q (the reference's integers) exactly, or within
    one step where not `exact`, and with onnxruntime within one step."""
    model = one_op_model(tmp_path, node, x.shape, y_q.shape, y_scale, y_zp, inits, x_q)
    path = tmp_path / "op.onnx"
    trainer = compile_model(path, tmp_path / "build", KERNELS["scalar"], loss="mse")
    strict = subprocess.run(["cc", *STRICT, *KERNELS["scalar"], "-fsyntax-only", "op.c"], cwd=tmp_path / "build",
                            capture_output=True, text=True)
    assert strict.returncode == 0, strict.stderr
    got = trainer.predict(x)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for name, want, tolerance in (("reference", ref.dequantize(y_q, y_scale, y_zp), 0.0 if exact else 1.0),
                                  ("onnxruntime", session.run(None, {"x": x})[0], 1.0)):
        steps = np.abs(got - want).max() / np.float32(y_scale)
        assert steps <= tolerance * (1 + 1e-4), f"{steps:.3f} output steps from {name}"


def per_channel_scale(m: int, per_channel: bool):
    return (RNG.uniform(0.005, 0.02, m) if per_channel else RNG.uniform(0.005, 0.02, 1)).astype(np.float32)


def weights(*shape):
    """Random int8 weights (never -128, as symmetric quantizers make them)."""
    return RNG.integers(-127, 128, size=shape).astype(np.int8)


# ---- QLinearConv ----
CONV_CASES = {  # x shape, weight shape, attributes, per-channel weight scale, weight zero point
    "3x3_pad1_bias": ((1, 3, 6, 6), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}, False, 0),
    "stride2_dilation2_per_channel": ((2, 2, 7, 8), (3, 2, 2, 3), {"strides": [2, 2], "dilations": [2, 1],
                                                                    "pads": [1, 0, 1, 2]}, True, 0),
    "grouped": ((1, 4, 5, 5), (4, 2, 2, 3), {"group": 2, "pads": [0, 1, 0, 1]}, True, 0),
    "depthwise_same": ((1, 3, 6, 5), (6, 1, 3, 3), {"group": 3, "auto_pad": "SAME_UPPER", "strides": [2, 2]}, True, 0),
    "1d_stride2": ((2, 2, 9), (3, 2, 3), {"strides": [2], "pads": [1, 1]}, False, 0),
    "weight_zero_point": ((1, 2, 5, 5), (3, 2, 3, 3), {"pads": [1, 1, 1, 1]}, False, 5),
}


def uint8(v):
    """The uint8 form of int8 levels (v + 128: the same real values with the zero point moved too)."""
    return (np.asarray(v).astype(np.int16) + 128).astype(np.uint8)


@pytest.mark.parametrize("as_uint8", [False, True], ids=["int8", "uint8"])
@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_qlinear_conv(tmp_path, case, as_uint8):
    """as_uint8: x, w and the zero points in the model are uint8 (the compiler shifts them to int8)."""
    x_shape, w_shape, attrs, per_channel, w_zp = CONV_CASES[case]
    xq, x = levels(*x_shape)
    w = weights(*w_shape)
    w_scale = per_channel_scale(w_shape[0], per_channel)
    w_zps = np.full(w_scale.shape, w_zp, np.int8)
    bias = RNG.integers(-3000, 3000, size=w_shape[0]).astype(np.int32)
    y_scale, y_zp = spread(int(np.prod(w_shape[1:])), X_SCALE * w_scale), np.int8(4)
    strides = attrs.get("strides", [1] * (len(x_shape) - 2))
    pads = same_upper_pads(x_shape, w_shape[2:], strides) if "auto_pad" in attrs else attrs.get("pads")
    y_q = ref.conv(xq, X_ZP, w, w_zps, bias, X_SCALE, w_scale, y_scale, y_zp, strides, pads,
                   attrs.get("dilations"), attrs.get("group", 1))
    node = helper.make_node("QLinearConv", ["xq", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp",
                                            "b"], ["yq"], **attrs)
    cast = uint8 if as_uint8 else np.asarray
    run(tmp_path, node, x, cast(y_q), y_scale, cast(y_zp),
        {"w": cast(w), "w_scale": w_scale, "w_zp": cast(w_zps), "b": bias}, (X_SCALE, cast(X_ZP)))


# ---- QLinearMatMul, QGemm ----
@pytest.mark.parametrize("a_shape, b_shape, per_column", [((3, 4), (4, 5), False), ((2, 3, 4), (4, 5), True),
                                                          ((2, 3, 6), (2, 6, 2), False)], ids=str)
def test_qlinear_matmul(tmp_path, a_shape, b_shape, per_column):
    aq, a = levels(*a_shape)
    b, b_scale = weights(*b_shape), per_channel_scale(b_shape[-1], per_column)
    b_zp = np.zeros(b_scale.shape, np.int8)
    y_scale, y_zp = spread(b_shape[-2], X_SCALE * b_scale), np.int8(-7)
    y_q = ref.matmul(aq, X_ZP, b, b_zp, X_SCALE, b_scale, y_scale, y_zp)
    node = helper.make_node("QLinearMatMul", ["xq", "x_scale", "x_zp", "b", "b_scale", "b_zp", "y_scale", "y_zp"],
                            ["yq"])
    run(tmp_path, node, a, y_q, y_scale, y_zp, {"b": b, "b_scale": b_scale, "b_zp": b_zp})


@pytest.mark.parametrize("trans_a, trans_b, per_column, c_shape, alpha", [
    (0, 0, False, None, 1.0), (0, 1, True, (5,), 1.0), (1, 1, True, (3, 5), 0.5), (1, 0, False, (3, 1), 2.0)],
    ids=str)
def test_qgemm(tmp_path, trans_a, trans_b, per_column, c_shape, alpha):
    (m, k, n) = (3, 7, 5)
    aq, a = levels(*((k, m) if trans_a else (m, k)))
    b, b_scale = weights(*((n, k) if trans_b else (k, n))), per_channel_scale(n, per_column)
    b_zp = np.zeros(b_scale.shape, np.int8)
    c = None if c_shape is None else RNG.integers(-2000, 2000, size=c_shape).astype(np.int32)
    y_scale, y_zp = spread(k, alpha * X_SCALE * b_scale), np.int8(2)
    y_q = ref.gemm(aq, X_ZP, b, b_zp, c, X_SCALE, b_scale, y_scale, y_zp, trans_a, trans_b, alpha)
    inputs = ["xq", "x_scale", "x_zp", "b", "b_scale", "b_zp", "c" if c is not None else "", "y_scale", "y_zp"]
    node = helper.make_node("QGemm", inputs, ["yq"], domain=MS, transA=trans_a, transB=trans_b, alpha=alpha)
    inits = {"b": b, "b_scale": b_scale, "b_zp": b_zp, **({"c": c} if c is not None else {})}
    run(tmp_path, node, a, y_q, y_scale, y_zp, inits)


# ---- QLinearAdd ----
@pytest.mark.parametrize("a_shape, b_shape, b_scale", [((2, 3, 4), (2, 3, 4), 0.11), ((2, 3, 4), (4,), 0.013),
                                                       ((3, 1), (1, 4), 0.05)], ids=str)
def test_qlinear_add(tmp_path, a_shape, b_shape, b_scale):
    aq, a = levels(*a_shape)
    b, b_scale, b_zp = weights(*b_shape), np.float32(b_scale), np.int8(9)
    y_scale, y_zp = np.float32((X_SCALE + b_scale) * 1.2), np.int8(-1)
    y_q = ref.add(aq, X_ZP, X_SCALE, b, b_zp, b_scale, y_scale, y_zp)
    node = helper.make_node("QLinearAdd", ["xq", "x_scale", "x_zp", "b", "b_scale", "b_zp", "y_scale", "y_zp"],
                            ["yq"], domain=MS)
    run(tmp_path, node, a, y_q, y_scale, y_zp, {"b": b, "b_scale": b_scale, "b_zp": b_zp})


# ---- pooling ----
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3, 7)], ids=str)
def test_qlinear_global_average_pool(tmp_path, shape):
    xq, x = levels(*shape)
    y_scale, y_zp = np.float32(0.03), np.int8(6)
    y_q = ref.global_average_pool(xq, X_ZP, X_SCALE, y_scale, y_zp)
    node = helper.make_node("QLinearGlobalAveragePool", ["xq", "x_scale", "x_zp", "y_scale", "y_zp"], ["yq"],
                            domain=MS, channels_last=0)
    run(tmp_path, node, x, y_q, y_scale, y_zp, {})


POOL_CASES = {  # x shape, attributes
    "3x3_stride2_pad1": ((1, 2, 7, 6), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "2x3_pad_end": ((2, 2, 5, 5), {"kernel_shape": [2, 3], "pads": [0, 0, 1, 2]}),
    "1d": ((2, 3, 9), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
}


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_qlinear_average_pool(tmp_path, case, count_include_pad):
    shape, attrs = POOL_CASES[case]
    xq, x = levels(*shape)
    y_scale, y_zp = np.float32(0.04), np.int8(-2)
    y_q = ref.average_pool(xq, X_ZP, X_SCALE, y_scale, y_zp, attrs["kernel_shape"], attrs.get("strides"),
                           attrs.get("pads"), count_include_pad)
    node = helper.make_node("QLinearAveragePool", ["xq", "x_scale", "x_zp", "y_scale", "y_zp"], ["yq"], domain=MS,
                            count_include_pad=count_include_pad, **attrs)
    run(tmp_path, node, x, y_q, y_scale, y_zp, {})


MAX_POOL_CASES = {**POOL_CASES, "dilated": ((1, 2, 7, 7), {"kernel_shape": [2, 3], "dilations": [2, 2],
                                                            "pads": [1, 1, 0, 2]})}


@pytest.mark.parametrize("case", sorted(MAX_POOL_CASES))
def test_max_pool_int8(tmp_path, case):
    """Same scale and zero point in and out: the window maxima of the int8 levels."""
    shape, attrs = MAX_POOL_CASES[case]
    xq, x = levels(*shape)
    y_q = ref.max_pool(xq, attrs["kernel_shape"], attrs.get("strides"), attrs.get("pads"), attrs.get("dilations"))
    node = helper.make_node("MaxPool", ["xq"], ["yq"], **attrs)
    run(tmp_path, node, x, y_q, X_SCALE, X_ZP, {})


# ---- QLinearConcat ----
@pytest.mark.parametrize("axis, shapes", [(1, [(2, 3, 4), (2, 2, 4)]), (-1, [(2, 3), (2, 1), (2, 4)])], ids=str)
def test_qlinear_concat(tmp_path, axis, shapes):
    xq, x = levels(*shapes[0])
    others = [(weights(*s), np.float32(RNG.uniform(0.02, 0.2)), np.int8(RNG.integers(-20, 20))) for s in shapes[1:]]
    y_scale, y_zp = np.float32(0.07), np.int8(3)
    y_q = ref.concat([(xq, X_SCALE, X_ZP), *others], y_scale, y_zp, axis)
    inputs, inits = ["y_scale", "y_zp", "xq", "x_scale", "x_zp"], {}
    for k, (q, s, z) in enumerate(others):
        names = [f"b{k}", f"b{k}_scale", f"b{k}_zp"]
        inputs += names
        inits.update(zip(names, (q, s, z)))
    node = helper.make_node("QLinearConcat", inputs, ["yq"], domain=MS, axis=axis)
    run(tmp_path, node, x, y_q, y_scale, y_zp, inits)


# ---- the requantization method ----
@pytest.mark.parametrize("real", [1.0, 0.75, 2.0**-31, 3.3e-5, 1.2345, 2.0**29 * 1.5])
def test_multiplier(real):
    """M in [2^30, 2^31) with r = M 2^-n to 31 bits, n in 1..62."""
    m, n = requant.multiplier(real, "t")
    assert 2**30 <= m < 2**31 and 1 <= n <= 62
    assert abs(m * 2.0**-n - real) <= real * 2.0**-30


def test_tiny_multiplier():
    """n would exceed 62: M shifts down instead (to 0 for the tiniest), n stays 62."""
    m, n = requant.multiplier(2.0**-50, "t")
    assert (m, n) == (2**12, 62)
    assert requant.multiplier(1e-30, "t") == (0, 62)


@pytest.mark.parametrize("real", [2.0**30, 0.0, -1.0, float("nan"), float("inf")])
def test_multiplier_refused(real):
    with pytest.raises(UnsupportedError, match="tensor 'y'"):
        requant.multiplier(real, "tensor 'y'")


def test_rounding_half_to_even():
    """acc * r rounded half to even, as onnxruntime (2.5 -> 2, -2.5 -> -2, 1.5 -> 2, -1.5 -> -2),
    then zero point and saturation; the C's integers equal these (every op test above)."""
    m, n = requant.multiplier(0.5, "t")
    acc = np.array([5, -5, 3, -3, 1000, -1000])
    np.testing.assert_array_equal(ref.requantize(acc, m, n, 1), [3, -1, 3, -1, 127, -128])


# ---- refused variants ----
def _q(*shape):
    return np.zeros(shape, np.int8)


REFUSED = {  # node, x shape, y shape, extra initializers, message
    "qgemm_float_output": (helper.make_node("QGemm", ["xq", "x_scale", "x_zp", "b", "x_scale", "x_zp"], ["yq"],
                                            domain=MS), (2, 3), (2, 4), {"b": _q(3, 4)}, "float output"),
    "channels_last": (helper.make_node("QLinearGlobalAveragePool", ["xq", "x_scale", "x_zp", "y_scale", "y_zp"],
                                       ["yq"], domain=MS, channels_last=1), (1, 2, 3, 3), (1, 2, 1, 1), {},
                      "channels_last"),
    "per_axis_activation": (helper.make_node("QLinearAdd", ["xq", "s2", "x_zp", "b", "x_scale", "x_zp", "y_scale",
                                                            "y_zp"], ["yq"], domain=MS), (2, 2), (2, 2),
                            {"b": _q(2, 2), "s2": np.full(2, 0.1, np.float32)}, "per-axis scale"),
    "matmul_broadcast_b": (helper.make_node("QLinearMatMul", ["xq", "x_scale", "x_zp", "b", "x_scale", "x_zp",
                                                              "y_scale", "y_zp"], ["yq"]), (2, 3, 4), (2, 3, 5),
                           {"b": _q(1, 4, 5)}, "broadcasting b"),
    "huge_multiplier": (helper.make_node("QLinearMatMul", ["xq", "x_scale", "x_zp", "b", "x_scale", "x_zp",
                                                           "tiny", "y_zp"], ["yq"]), (2, 3), (2, 4),
                        {"b": _q(3, 4), "tiny": np.float32(1e-15)}, "output 'yq': requantization multiplier"),
    "int32_overflow": (helper.make_node("QLinearMatMul", ["xq", "x_scale", "x_zp", "b", "x_scale", "x_zp",
                                                          "y_scale", "y_zp"], ["yq"]), (1, 33100), (1, 1),
                       {"b": _q(33100, 1)}, "sums of 33100 int8 products"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused(tmp_path, case):
    node, x_shape, y_shape, inits, message = REFUSED[case]
    one_op_model(tmp_path, node, x_shape, y_shape, np.float32(0.1), np.int8(0), inits)
    with pytest.raises(UnsupportedError, match=message):
        codegen.generate(tmp_path / "op.onnx", tmp_path / "build", loss="mse")
