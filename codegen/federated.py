"""Federated averaging on the server side: deltas in, new global weights out. The device computes
its delta in C (<prefix>_fl_delta); these functions do the same from saved weights (CLI)."""
from __future__ import annotations

import numpy as np

from .errors import DataError


def delta(current: dict[str, np.ndarray], start: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """current - start in float32, like the device subtracts."""
    return {n: np.asarray(current[n], np.float32) - np.asarray(start[n], np.float32) for n in current}


def fedavg(global_params: dict[str, np.ndarray], deltas: list[tuple[dict[str, np.ndarray], int]]) -> dict[str, np.ndarray]:
    """FedAvg: global + sum_k n_k * delta_k / sum_k n_k over (delta, sample count n_k) pairs
    (blob.decode_delta of each client's message)."""
    total = sum(n for _, n in deltas)
    if not deltas or total == 0:
        raise DataError("aggregation needs at least one delta with a sample count > 0")
    return {name: (value + sum(n * d[name].astype(np.float64) for d, n in deltas) / total).astype(np.float32)
            for name, value in global_params.items()}
