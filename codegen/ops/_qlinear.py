"""What the QOperator ops (the frozen int8 layers) share: their scales and zero points are
compile-time constants, read here and turned into the kernels' requantization arguments
(codegen/requant.py); data tensors are int8 (codegen/quantized.py turned uint8 into int8)."""
from __future__ import annotations

import numpy as np

from .. import requant
from ..ir import ACT, PARAM
from . import refuse

INT8_RANGE = (-128, 127)
BIAS_LIMIT = 2**30  # mt_quantize_bias saturates a trainable bias here: room for the int8 sums


def present(node, slot: int) -> bool:
    return slot < len(node.inputs) and bool(node.inputs[slot])


def check_tensors(node, graph, data=(), scales=(), zero_points=(), per_axis=()) -> None:
    """Data slots int8; scale slots constant float32, zero point slots constant int8 (absent ones
    default to 0); a scale or zero point has one value unless its slot is in `per_axis`."""
    for slot in data:
        if graph.tensors[node.inputs[slot]].dtype != "int8":
            raise refuse(node, f"input '{node.inputs[slot]}' of type {graph.tensors[node.inputs[slot]].dtype} "
                               "(int8 and uint8 only)")
    for slots, dtype in ((scales, "float32"), (zero_points, "int8")):
        for slot in (s for s in slots if present(node, s)):
            t = graph.tensors[node.inputs[slot]]
            if t.value is None:
                raise refuse(node, f"a computed (non-constant) scale or zero point '{t.name}'")
            if t.dtype != dtype:
                raise refuse(node, f"{t.dtype} scale or zero point '{t.name}' (a scale is float32, a zero "
                                   "point int8 or uint8)")
            if t.size != 1 and slot not in per_axis:
                raise refuse(node, f"a per-axis scale or zero point '{t.name}' on this input")


def check_per_axis(node, graph, slots, count: int, what: str) -> None:
    """Per-axis scales and zero points hold one value or `count` (one per `what`)."""
    for slot in (s for s in slots if present(node, s)):
        t = graph.tensors[node.inputs[slot]]
        if t.size not in (1, count):
            raise refuse(node, f"scale or zero point '{t.name}' of shape {list(t.shape)} for {count} {what}")


def check_sums(node, graph, terms: int, bias_slot: int | None = None) -> None:
    """The kernels accumulate in int32: `terms` products (x - zx)(w - zw), each at most 255^2 in
    magnitude, plus the int32 bias (optional input `bias_slot`) must fit. A bias computed at run
    time (a trainable bias: QuantizeBias) or trained as int32 (--update int8) is saturated at BIAS_LIMIT."""
    bias = graph.tensors[node.inputs[bias_slot]] if bias_slot is not None and present(node, bias_slot) else None
    if bias is not None and bias.dtype != "int32":
        raise refuse(node, f"bias '{bias.name}' of type {bias.dtype} (int32 only)")
    if bias is not None and bias.value is None and bias.role != ACT:
        raise refuse(node, f"a computed (non-constant) bias '{bias.name}'")
    largest = 0 if bias is None else BIAS_LIMIT if bias.value is None or bias.role == PARAM else \
        int(np.abs(bias.value.astype(np.int64)).max(initial=0))
    if terms * 255**2 + largest >= 2**31:
        raise refuse(node, f"sums of {terms} int8 products (the int32 accumulator could overflow)")


def scale(c, node, slot: int) -> np.ndarray:
    """A scale's values in float64 (the multipliers are computed in float64 from float32 scales)."""
    return c.value(node.inputs[slot]).astype(np.float64).reshape(-1)


def zero_point(c, node, slot: int) -> int:
    """A per-tensor zero point; 0 when the optional input is absent."""
    return int(c.value(node.inputs[slot]).reshape(-1)[0]) if present(node, slot) else 0


def zero_points(c, node, slot: int, count: int) -> str:
    """A static array of `count` zero points (per channel, or one repeated)."""
    value = c.value(node.inputs[slot]).reshape(-1) if present(node, slot) else np.zeros(1, np.int64)
    return c.ints(np.broadcast_to(value, (count,)))


def where(node) -> str:
    """Names the output in a requantization error."""
    return f"{node.describe()}, output '{node.outputs[0]}'"


def requant_literal(c, mult, shift, zp: int) -> str:
    """The kernels' mt_requant: multipliers and shifts (one, or one per channel or per count)."""
    lo, hi = INT8_RANGE
    return f"(mt_requant){{{c.ints(mult)}, {c.ints(shift)}, {int(len(mult) > 1)}, {zp}, {lo}, {hi}}}"


def requant_c(c, node, reals, zp: int) -> str:
    """The mt_requant of output multipliers `reals` (one, or one per channel)."""
    return requant_literal(c, *requant.per_channel(reals, where(node)), zp)


def scales(c, node, slot: int, count: int) -> str:
    """A static float array of `count` scales (per channel, or one repeated): the real weights
    of the backward pass."""
    return c.floats(np.broadcast_to(c.value(node.inputs[slot]).reshape(-1), (count,)))
