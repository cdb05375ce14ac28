"""Numpy reference of the int8 kernels' integer arithmetic (runtime_c/kernels/*_s8.h), written
independently of the C: int64 accumulators, then codegen/requant.py's requantization
clamp(zp + round_half_even(acc * M * 2^-n), -128, 127). Multipliers and shifts come from
codegen.requant (the one method both sides share); everything else is recomputed here.
Spatial ops take NCHW (1-D: NCW) tensors."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from codegen import requant


def quantize(x, scale, zp):
    """QuantizeLinear in float32: round half to even, saturate."""
    q = np.rint(np.asarray(x, np.float32) / np.float32(scale)) + np.float32(zp)
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize(q, scale, zp):
    return (q.astype(np.int32) - int(zp)).astype(np.float32) * np.float32(scale)


def requantize(acc, mult, shift, zp):
    """acc (int64) times M * 2^-n, rounded half to even, plus zp, saturated (mult/shift broadcast to acc)."""
    mult, shift = np.asarray(mult, np.int64), np.asarray(shift, np.int64)
    return np.clip(round_shift(np.asarray(acc, np.int64) * mult, shift) + int(zp), -128, 127).astype(np.int8)


def round_shift(p, shift):
    """p * 2^-shift rounded half to even (int64 arrays)."""
    q = p >> shift
    rest, half = p - (q << shift), np.left_shift(np.int64(1), shift - 1)
    return q + ((rest > half) | ((rest == half) & (q & 1 == 1)))


def _channel(reals, what="test"):
    """Multipliers and shifts as column vectors over axis 1 of an (N, C, ...) accumulator."""
    mult, shift = requant.per_channel(reals, what)
    return np.array(mult).reshape(1, -1, 1, 1), np.array(shift).reshape(1, -1, 1, 1)


def _as_2d(x):
    return x if x.ndim == 4 else x[:, :, None, :]


def _windows(x, kernel, strides, dilations, begin, end, fill):
    """(N, C, oh, ow, kh, kw) taps of a 4-D x padded with `fill` (numbers of the window)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    xp = np.pad(x, ((0, 0), (0, 0), (begin[0], end[0]), (begin[1], end[1])), constant_values=fill)
    oh = (xp.shape[2] - (kh - 1) * dh - 1) // sh + 1
    ow = (xp.shape[3] - (kw - 1) * dw - 1) // sw + 1
    taps = np.empty(x.shape[:2] + (oh, ow, kh, kw), x.dtype)
    for i in range(kh):
        for j in range(kw):
            taps[..., i, j] = xp[:, :, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw]
    return taps


def _geometry(x, kernel, strides=None, pads=None, dilations=None):
    """The 2-D window arguments of a 1-D or 2-D op (ONNX pads: begins, then ends)."""
    rank = x.ndim - 2
    strides, dilations = strides or [1] * rank, dilations or [1] * rank
    pads = pads or [0] * 2 * rank
    lift = (lambda v, one: [one] + list(v)) if rank == 1 else (lambda v, one: list(v))
    return (lift(kernel, 1), lift(strides, 1), lift(dilations, 1), lift(pads[:rank], 0), lift(pads[rank:], 0))


def conv(x, zx, w, zw, b, sx, sw, sy, zy, strides=None, pads=None, dilations=None, group=1):
    """QLinearConv: w zero point and scale scalar or per output channel; b int32 or None."""
    kernel, strides, dilations, begin, end = _geometry(x, w.shape[2:], strides, pads, dilations)
    xs = _as_2d(x.astype(np.int64) - int(zx))
    ws = _as_2d(w.astype(np.int64) - np.broadcast_to(np.asarray(zw, np.int64).reshape(-1), (w.shape[0],))
                .reshape(-1, 1, *(1,) * (w.ndim - 2)))
    taps = _windows(xs, kernel, strides, dilations, begin, end, 0)  # padding: x - zx = 0
    mg, cg = ws.shape[0] // group, ws.shape[1]
    acc = np.concatenate([np.einsum("ncopij,mcij->nmop", taps[:, g * cg:(g + 1) * cg], ws[g * mg:(g + 1) * mg])
                          for g in range(group)], axis=1)
    if b is not None:
        acc = acc + np.asarray(b, np.int64).reshape(1, -1, 1, 1)
    y = requantize(acc, *_channel(np.float64(sx) * np.asarray(sw, np.float64) / np.float64(sy)), zy)
    return y.reshape(y.shape[:2] + y.shape[3:]) if x.ndim == 3 else y


def gemm(a, za, b, zb, c, sa, sb, sy, zy, trans_a=0, trans_b=0, alpha=1.0):
    """QGemm: b zero point and scale scalar or per column; c int32 broadcast to (M, N) or None."""
    a = (a.T if trans_a else a).astype(np.int64) - int(za)
    b = (b.T if trans_b else b).astype(np.int64) - np.asarray(zb, np.int64).reshape(-1)
    acc = a @ b + (0 if c is None else np.asarray(c, np.int64))
    mult, shift = requant.per_channel(alpha * np.float64(sa) * np.asarray(sb, np.float64) / np.float64(sy), "test")
    return requantize(acc, mult, shift, zy)


def matmul(a, za, b, zb, sa, sb, sy, zy):
    """QLinearMatMul: a (..., M, K); b (K, N) (per-column allowed) or with a's batch dims."""
    acc = (a.astype(np.int64) - int(za)) @ (b.astype(np.int64) - np.asarray(zb, np.int64).reshape(-1))
    mult, shift = requant.per_channel(np.float64(sa) * np.asarray(sb, np.float64) / np.float64(sy), "test")
    return requantize(acc, mult, shift, zy)


def add(a, za, sa, b, zb, sb, sy, zy):
    """QLinearAdd with broadcasting: both multipliers on one shift, one rounding."""
    (ma, mb), n = requant.shared([np.float64(sa) / np.float64(sy), np.float64(sb) / np.float64(sy)], "test")
    acc = (a.astype(np.int64) - int(za)) * ma + (b.astype(np.int64) - int(zb)) * mb
    return requantize(acc, 1, n, zy)


def max_pool(x, kernel, strides=None, pads=None, dilations=None):
    geometry = _geometry(x, kernel, strides, pads, dilations)
    y = _windows(_as_2d(x), *geometry, fill=-128).max(axis=(4, 5))
    return y.reshape(y.shape[:2] + y.shape[3:]) if x.ndim == 3 else y


def average_pool(x, zx, sx, sy, zy, kernel, strides=None, pads=None, count_include_pad=0):
    """QLinearAveragePool: window sums of x - zx over the window's count (padding counts with
    count_include_pad), with the multiplier of that count."""
    geometry = _geometry(x, kernel, strides, pads)
    xs = _as_2d(x.astype(np.int64) - int(zx))
    sums = _windows(xs, *geometry, fill=0).sum(axis=(4, 5))
    inside = _windows(np.ones_like(xs[:1, :1]), *geometry, fill=count_include_pad).sum(axis=(4, 5))
    mult, shift = (np.array(v) for v in requant.averages(sx, sy, range(1, int(np.prod(kernel)) + 1), "test"))
    y = requantize(sums, mult[inside - 1], shift[inside - 1], zy)
    return y.reshape(y.shape[:2] + y.shape[3:]) if x.ndim == 3 else y


def global_average_pool(x, zx, sx, sy, zy):
    count = int(np.prod(x.shape[2:]))
    sums = (x.astype(np.int64) - int(zx)).reshape(*x.shape[:2], -1).sum(axis=2)
    (mult,), (shift,) = requant.averages(sx, sy, [count], "test")
    return requantize(sums, mult, shift, zy).reshape(*x.shape[:2], *(1,) * (x.ndim - 2))


def concat(parts, sy, zy, axis):
    """QLinearConcat: parts are (q, scale, zero point); each moved to the output's scale."""
    out = []
    for q, s, z in parts:
        mult, shift = requant.per_channel([np.float64(s) / np.float64(sy)], "test")
        out.append(requantize(q.astype(np.int64) - int(z), mult[0], shift[0], zy))
    return np.concatenate(out, axis=axis)


# ---- the lowered graph ----
# An interpreter of the graph the compiler runs (a build folder's training_model.onnx: the int8
# ops codegen/quantized.py lowers to, the Q/DQ boundaries, views, and the float ops that stay
# between them, in float32 in the C kernels' order), so a test compares the C's forward with the
# same arithmetic done here, operand by operand.

def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _window_attrs(a: dict) -> dict:
    assert a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET") and not a.get("ceil_mode", 0), a
    return {"strides": a.get("strides"), "pads": a.get("pads"), "dilations": a.get("dilations")}


def _scalar(v):
    """A per-tensor scale or zero point (the activations' Q/DQ nodes have no others)."""
    assert np.asarray(v).size == 1, v
    return np.asarray(v).reshape(-1)[0]


def _qlinear_conv(ins, a):
    x, sx, zx, w, sw, zw, sy, zy = ins[:8]
    return conv(x, zx, w, zw.reshape(-1), ins[8] if len(ins) > 8 else None, sx, sw.reshape(-1), sy, zy,
                group=a.get("group", 1), **_window_attrs(a))


def _qgemm(ins, a):
    assert len(ins) == 9, "QGemm with a float output"
    return gemm(ins[0], ins[2], ins[3], ins[5].reshape(-1), ins[6], ins[1], ins[4].reshape(-1), ins[7], ins[8],
                a.get("transA", 0), a.get("transB", 0), a.get("alpha", 1.0))


def _qlinear_matmul(ins, a):
    return matmul(ins[0], ins[2], ins[3], ins[5].reshape(-1), ins[1], ins[4].reshape(-1), ins[6], ins[7])


def _max_pool(ins, a):
    assert ins[0].dtype == np.int8, "a float MaxPool (its padding is -inf, not -128)"
    return max_pool(ins[0], a["kernel_shape"], **_window_attrs(a))


def _float_average_pool(ins, a):
    """AveragePool in float32 as mt_avg_pool: taps summed row by row from 0, then divided by the
    window's count (count_include_pad: the taps inside the padded input)."""
    x = ins[0]
    geometry = _geometry(x, a["kernel_shape"], **_window_attrs(a))
    taps = _windows(_as_2d(x), *geometry, fill=np.float32(0))
    acc = np.zeros(taps.shape[:4], np.float32)
    for i in range(taps.shape[4]):
        for j in range(taps.shape[5]):
            acc += taps[..., i, j]
    inside = _windows(np.ones_like(_as_2d(x)[:1, :1]), *geometry, fill=a.get("count_include_pad", 0)).sum(axis=(4, 5))
    y = acc / inside.astype(np.float32)
    return y.reshape(y.shape[:2] + y.shape[3:]) if x.ndim == 3 else y


def _reshape(ins, a):
    x, shape = ins
    shape = [x.shape[d] if s == 0 and not a.get("allowzero", 0) else s for d, s in enumerate(shape.tolist())]
    return x.reshape(shape)


def _quantize_bias(ins, a):
    """mt_quantize_bias: rintf(b / s) in float32, saturated at +-2^30."""
    return np.clip(np.rint(ins[0].astype(np.float32) / ins[1].astype(np.float32)), -2.0**30, 2.0**30).astype(np.int32)


GRAPH_OPS = {
    "QuantizeLinear": lambda ins, a: quantize(ins[0], _scalar(ins[1]), _scalar(ins[2])),
    "DequantizeLinear": lambda ins, a: dequantize(ins[0], _scalar(ins[1]), _scalar(ins[2])),
    "QLinearConv": _qlinear_conv,
    "QGemm": _qgemm,
    "QLinearMatMul": _qlinear_matmul,
    "QLinearAdd": lambda ins, a: add(ins[0], ins[2], ins[1], ins[3], ins[5], ins[4], ins[6], ins[7]),
    "QLinearGlobalAveragePool": lambda ins, a: global_average_pool(ins[0], ins[2], ins[1], ins[3], ins[4]),
    "QLinearConcat": lambda ins, a: concat([tuple(ins[k:k + 3]) for k in range(2, len(ins), 3)], ins[0], ins[1],
                                           a["axis"]),
    "MaxPool": _max_pool,
    "AveragePool": _float_average_pool,
    "QuantizeBias": _quantize_bias,
    "Reshape": _reshape,
    "Flatten": lambda ins, a: ins[0].reshape(int(np.prod(ins[0].shape[:a.get("axis", 1)])), -1),
}


def run_graph(path, feeds: dict, outputs=("y",)) -> dict:
    """Every tensor that `outputs` need, computed from `feeds` by GRAPH_OPS over the graph at
    `path` (initializers as stored there); an op outside GRAPH_OPS fails, naming it."""
    graph = onnx.load(str(path)).graph
    needed, nodes = set(outputs), []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            nodes.append(node)
            needed.update(i for i in node.input if i)
    env = {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.name in needed}
    env.update({k: np.asarray(v) for k, v in feeds.items()})
    for node in reversed(nodes):
        if node.op_type not in GRAPH_OPS:
            raise NotImplementedError(f"{node.op_type} ({node.name or node.output[0]}) in the int8 reference")
        env[node.output[0]] = GRAPH_OPS[node.op_type]([env[i] if i else None for i in node.input], _attrs(node))
    return env
