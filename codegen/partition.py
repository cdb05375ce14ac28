"""Deterministic split of one data set over simulated federated clients (`mcutrain flower-app`).
Every client first gets one full training batch drawn at random, so no client ever has too
little data to take a step; the rest is split IID or with Dirichlet(alpha) label skew."""
from __future__ import annotations

import numpy as np

from .errors import DataError, OptionError

METHODS = ("iid", "dirichlet")


def check(samples: int, clients: int, batch: int) -> None:
    """Refuse a client count the data cannot give one full training batch each."""
    if clients < 1:
        raise OptionError(f"the number of clients must be at least 1, got {clients}")
    if clients * batch > samples:
        raise DataError(f"{clients:,} clients need {clients * batch:,} samples (one training batch of {batch} "
                        f"each); the data set has {samples:,}: use at most {samples // batch:,} clients")


def split(samples: int, clients: int, batch: int, method: str = "iid", alpha: float = 0.5, seed: int = 0,
          groups: np.ndarray | None = None) -> list[np.ndarray]:
    """Sample indices of each client (sorted), the same for the same arguments. `groups` (class
    labels) drive the Dirichlet skew: each class is shared out by its own Dirichlet(alpha) draw;
    without groups, the client sizes are (quantity skew)."""
    check(samples, clients, batch)
    if method not in METHODS:
        raise OptionError(f"partitioning must be one of {', '.join(METHODS)}, got '{method}'")
    rng = np.random.default_rng(seed)
    order = rng.permutation(samples)
    first, rest = order[:clients * batch].reshape(clients, batch), order[clients * batch:]
    if method == "iid":
        extra = np.array_split(rest, clients)
    else:
        if not alpha > 0:
            raise OptionError(f"dirichlet-alpha must be a positive number, got {alpha}")
        keys = np.zeros(samples, np.int64) if groups is None else np.asarray(groups).reshape(samples, -1)[:, 0]
        shares: list[list[np.ndarray]] = [[] for _ in range(clients)]
        for key in np.unique(keys[rest]):
            members = rest[keys[rest] == key]
            cuts = (np.cumsum(rng.dirichlet(np.full(clients, alpha)))[:-1] * len(members)).astype(np.int64)
            for k, part in enumerate(np.split(members, cuts)):
                shares[k].append(part)
        extra = [np.concatenate(s) for s in shares]
    return [np.sort(np.concatenate([f, e])) for f, e in zip(first, extra)]


def of_data(y: np.ndarray, classes: int | None, clients: int, batch: int, method: str, alpha: float,
            seed: int) -> list[np.ndarray]:
    """`split` of a data set's labels y: class labels (classes not None) drive the Dirichlet skew."""
    return split(len(y), clients, batch, method, alpha, seed, y if classes is not None else None)
