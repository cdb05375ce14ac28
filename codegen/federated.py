"""Federated averaging on the server side: deltas in, new global weights out. The device computes
its delta in C (<prefix>_fl_delta); these functions do the same from saved weights (CLI).
`validate` is the one gate every client message passes before `fedavg`, for `mcutrain aggregate`
(which refuses the run) and for a server (which drops the client and goes on with the round):
one bad or repeated client must not poison the global model."""
from __future__ import annotations

import hashlib
import math
from enum import Enum

import numpy as np

from . import blob
from .errors import DataError
from .manifest import Manifest
from .ops._qlinear import BIAS_LIMIT


class Reason(str, Enum):
    """Which check refused a message, for a server that counts or logs dropped clients."""
    FORMAT = "format"  # framing, version, model hash, length or CRC (blob.check)
    NON_FINITE = "non-finite"  # NaN/Inf values (in an int8 delta, also from a NaN/huge scale)
    NORM = "norm"  # L2 norm over all tensors above max_norm
    DUPLICATE = "duplicate"  # the same bytes as a message already accepted


class Refused(DataError):
    """A message or model refused; the text names its source and tensor, `reason` the check."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason


def delta(current: dict[str, np.ndarray], start: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """current - start in float32, like the device subtracts; exact (int64) for the integer
    parameters of --update int8."""
    return {n: np.asarray(current[n], np.int64) - np.asarray(start[n], np.int64) if np.asarray(current[n]).dtype.kind
            == "i" else np.asarray(current[n], np.float32) - np.asarray(start[n], np.float32) for n in current}


def _as(value: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A FedAvg result in the type of the global tensor: float32, or an integer parameter's
    nearest integers saturated as the C saturates them (int8; int32 biases at +-BIAS_LIMIT)."""
    if like.dtype.kind != "i":
        return value.astype(np.float32)
    limit = (-128, 127) if like.dtype == np.int8 else (-BIAS_LIMIT, BIAS_LIMIT)
    return np.clip(np.rint(value), *limit).astype(like.dtype)


def _non_finite(params: dict[str, np.ndarray]) -> tuple[str, int] | None:
    """(first tensor holding NaN/Inf, how many it holds), or None when all are finite."""
    for name, value in params.items():
        count = int(np.count_nonzero(~np.isfinite(value)))
        if count:
            return name, count
    return None


def check_finite(params: dict[str, np.ndarray], source: str) -> None:
    """Refuse NaN/Inf anywhere: averaged in, a single one makes that global weight NaN for good."""
    bad = _non_finite(params)
    if bad:
        raise Refused(Reason.NON_FINITE, f"{source}: tensor '{bad[0]}' has {bad[1]:,} NaN/Inf value(s); "
                      "leave it out (training diverged or the data is corrupt)")


def norm(change: dict[str, np.ndarray]) -> float:
    """L2 norm over all tensors, in float64 (float32 squares overflow from about 1.8e19)."""
    return math.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in change.values()))


def validate(data: bytes, manifest: Manifest, source: str, max_norm: float | None = None,
             seen: dict[bytes, str] | None = None) -> tuple[dict[str, np.ndarray], int]:
    """(delta, sample count) of one client's message, or Refused naming `source` and the reason:
    bad framing, NaN/Inf, L2 norm above `max_norm`, or the same bytes as a message already in
    `seen` (digest -> source, filled with each accepted message: pass one dict per round)."""
    digest = hashlib.sha256(bytes(data)).digest()
    if seen is not None and digest in seen:
        raise Refused(Reason.DUPLICATE, f"{source}: the same bytes as {seen[digest]} "
                      "(one client's delta would count twice); pass each delta once")
    try:
        change, samples = blob.decode_delta(data, manifest)
    except DataError as e:
        raise Refused(Reason.FORMAT, f"{source}: {e}") from None
    check_finite(change, source)
    if max_norm is not None and (size := norm(change)) > max_norm:
        raise Refused(Reason.NORM, f"{source}: L2 norm {size:.6g} over all tensors is above the "
                      f"limit {max_norm:g} (--max-norm); leave this client out")
    if seen is not None:
        seen[digest] = source
    return change, samples


def fedavg(global_params: dict[str, np.ndarray], deltas: list[tuple[dict[str, np.ndarray], int]]) -> dict[str, np.ndarray]:
    """FedAvg: global + sum_k n_k * delta_k / sum_k n_k over (delta, sample count n_k) pairs that
    passed `validate`. Summed in float64; refused when the float32 result overflows to Inf. Integer
    parameters (--update int8) get the nearest integers of the average, saturated."""
    total = sum(n for _, n in deltas)
    if not deltas or total == 0:
        raise DataError("aggregation needs at least one delta with a sample count > 0")
    with np.errstate(over="ignore"):
        new = {name: _as(value + sum(n * d[name].astype(np.float64) for d, n in deltas) / total, np.asarray(value))
               for name, value in global_params.items()}
    bad = _non_finite(new)
    if bad:
        raise DataError(f"the FedAvg result overflows float32 in tensor '{bad[0]}' ({bad[1]:,} value(s)): "
                        "the deltas or the global model are far too large; refuse such deltas with a norm "
                        "limit (--max-norm)")
    return new
