"""Host training loop over an in-memory data set: fixed-size shuffled batches, per-epoch metrics."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from .errors import DataError


@dataclass
class EpochResult:
    loss: float  # mean training loss over the epoch's steps (nan before training)
    metric: str  # "accuracy" or "mse"
    value: float

    def __str__(self) -> str:
        shown = f"{self.value:.2%}" if self.metric == "accuracy" else f"{self.value:.5g}"
        loss = "" if np.isnan(self.loss) else f"loss {self.loss:.5g}, "
        return f"{loss}{self.metric} {shown}"


def _batches(n: int, batch: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i:i + batch] for i in range(0, n - batch + 1, batch)]


def _check(trainer, x, y):
    if len(x) != len(y):
        raise DataError(f"x has {len(x)} samples but y has {len(y)}")
    if len(x) < trainer.batch:
        raise DataError(f"the data set has {len(x)} samples, fewer than one batch ({trainer.batch})")
    trainer.check_labels(y, len(y))
    sample = tuple(trainer.manifest.inputs[0].shape[1:])
    if tuple(x.shape[1:]) != sample:
        raise DataError(f"samples in x have shape {tuple(x.shape[1:])}, the model takes {sample}")


def evaluate(trainer, x: np.ndarray, y: np.ndarray, loss: float = float("nan")) -> EpochResult:
    """Accuracy (cross_entropy: argmax, bce_with_logits: logit > 0) or MSE over whole batches."""
    _check(trainer, x, y)
    kind = trainer.manifest.loss
    scores = []
    for idx in _batches(len(x), trainer.batch, None):
        pred, target = trainer.predict(x[idx]), y[idx]
        if kind == "cross_entropy":
            scores.append(np.mean(pred.argmax(axis=1) == target))
        elif kind == "bce_with_logits":
            scores.append(np.mean((pred > 0) == (target > 0.5)))
        else:
            scores.append(np.mean((pred - target.reshape(pred.shape)) ** 2))
    return EpochResult(loss, "mse" if kind == "mse" else "accuracy", float(np.mean(scores)))


def fit(trainer, x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0,
        on_step: Callable[[], None] | None = None) -> Iterator[EpochResult]:
    """Train `epochs` epochs (the last incomplete batch of each epoch is dropped)."""
    _check(trainer, x, y)
    if len(x) < trainer.train_batch:
        raise DataError(f"the data set has {len(x)} samples, fewer than one training batch ({trainer.train_batch})")
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        losses = []
        for idx in _batches(len(x), trainer.train_batch, rng):
            losses.append(trainer.train_step(x[idx], y[idx]))
            if on_step:
                on_step()
        yield evaluate(trainer, x, y, float(np.mean(losses)))
