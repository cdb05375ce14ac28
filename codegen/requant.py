"""Requantization: the one way an int32 accumulator becomes an int8 output in the frozen int8 layers.

A real multiplier r (for a conv: s_x * s_w[c] / s_y, computed in float64 from the float32 scales)
is represented by an int32 M in [2^30, 2^31) and a right shift n in 1..62, with r ~= M * 2^-n
(M rounded to nearest). An accumulator acc (int32: the sum of (x - z_x)(w - z_w) plus the int32
bias) becomes

    y = clamp(z_y + round_half_even(acc * M * 2^-n), lo, hi)

with a 64-bit product and an arithmetic shift: acc * r rounded half to even (as onnxruntime
rounds: where the multiplier is exact, e.g. an average over 4 taps, ties go the same way),
exactly the same integers
in the C kernels (runtime_c/kernels/quant_s8.h) and the numpy reference (tests/int8_reference.py).
|acc * M| < 2^62, so the sum never overflows. Integers only: a board without an FPU gets the same
bits as the host.

A tiny r, whose n would exceed 62, keeps n = 62 and shifts M down (rounded; M may become 0: the
output is then z_y). r >= 2^30 (n would be < 1), r <= 0 or non-finite r is refused, naming the tensor.

Multi-input ops sum several rescaled inputs before the one rounding (QLinearAdd: r_a (a - z_a) +
r_b (b - z_b)), so their multipliers share one shift (`shared`); average pooling divides by the
window's count, one multiplier per count (`averages`)."""
from __future__ import annotations

import math

import numpy as np

from .errors import UnsupportedError

MIN_SHIFT, MAX_SHIFT = 1, 62


def _check(real: float, what: str) -> None:
    if not math.isfinite(real) or real <= 0.0 or real >= 2.0 ** 30:
        raise UnsupportedError(f"{what}: requantization multiplier {real!r} (the scales' ratio must be "
                               f"finite, positive and below 2^30)")


def _round_shift(value: int, k: int) -> int:
    """value * 2^-k rounded half up (integers: no float rounding)."""
    return (value + (1 << (k - 1))) >> k if k > 0 else value


def multiplier(real: float, what: str) -> tuple[int, int]:
    """(M, n) with real ~= M * 2^-n; `what` names the tensor in the error."""
    real = float(real)
    _check(real, what)
    frac, exp = math.frexp(real)  # real = frac * 2^exp, frac in [0.5, 1)
    m = math.floor(frac * 2.0 ** 31 + 0.5)  # exact: frac has 53 bits
    if m == 1 << 31:
        m, exp = 1 << 30, exp + 1
    n = 31 - exp
    if n > MAX_SHIFT:
        m, n = _round_shift(m, n - MAX_SHIFT), MAX_SHIFT
    return m, n


def per_channel(reals, what: str) -> tuple[list[int], list[int]]:
    """Multipliers and shifts of a per-tensor (one value) or per-channel vector of reals."""
    pairs = [multiplier(r, what) for r in np.asarray(reals, np.float64).reshape(-1)]
    return [m for m, _ in pairs], [n for _, n in pairs]


def shared(reals, what: str) -> tuple[list[int], int]:
    """Multipliers of several reals over one shift, the largest real's: each M_i = round(r_i 2^n)
    (the smaller ones keep fewer bits, at most 2^31 - 1 each)."""
    reals = [float(r) for r in reals]
    for r in reals:
        _check(r, what)
    n = multiplier(max(reals), what)[1]
    return [math.floor(math.ldexp(r, n) + 0.5) for r in reals], n


def averages(s_x: float, s_y: float, counts, what: str) -> tuple[list[int], list[int]]:
    """Multipliers and shifts of window means, real = s_x / (s_y * count), one per count."""
    return per_channel([float(s_x) / (float(s_y) * k) for k in counts], what)
