"""Host training loop over an in-memory data set: fixed-size shuffled batches, per-epoch metrics."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import npz
from .errors import DataError


@dataclass
class EpochResult:
    loss: float  # mean training loss over the epoch's steps, or the loss of the predictions
    metric: str  # "accuracy" or "mse"
    value: float

    def describe(self, data: str = "") -> str:
        """'loss 0.1, accuracy 90.00%', each figure named after the `data` it comes from
        (training, held-out): training and held-out accuracy are easily confused."""
        prefix = f"{data} " if data else ""
        shown = f"{self.value:.2%}" if self.metric == "accuracy" else f"{self.value:.5g}"
        return f"{prefix}loss {self.loss:.5g}, {prefix}{self.metric} {shown}"

    def __str__(self) -> str:
        return self.describe()


def load_data(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """x and y of an .npz, each checked (name, numeric dtype, declared size) before it is read."""
    if not path.is_file():
        raise DataError(f"data file '{path}' not found")
    what = "an .npz file with arrays 'x' and 'y'"
    with npz.Archive(path, what) as archive:
        missing = [n for n in ("x", "y") if n not in archive.names]
        if missing:
            raise DataError(f"'{path}' must be {what}; it has no {' or '.join(map(repr, missing))} "
                            f"(it has {sorted(archive.names)})")
        return archive.array("x"), archive.array("y")


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    z = logits - logits.max(axis=1, keepdims=True)
    nll = np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(labels)), labels]
    return float(nll.mean()), float(np.mean(logits.argmax(axis=1) == labels))


def _bce_with_logits(logits: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    t = targets.reshape(logits.shape)
    loss = np.maximum(logits, 0) - logits * t + np.log1p(np.exp(-np.abs(logits)))
    return float(loss.mean()), float(np.mean((logits > 0) == (t > 0.5)))


def _mse(pred: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    error = float(np.mean((pred - targets.reshape(pred.shape)) ** 2))
    return error, error


# --loss -> (metric, (predictions, labels) -> (mean loss, metric) of one batch). The losses are
# the C's (PyTorch's, mean reduction), recomputed from predictions: the C API has no loss-only call.
SCORES = {"cross_entropy": ("accuracy", _cross_entropy), "bce_with_logits": ("accuracy", _bce_with_logits),
          "mse": ("mse", _mse)}


def _batches(n: int, batch: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i:i + batch] for i in range(0, n - batch + 1, batch)]


def check(trainer, x, y):
    """Refuse data the trainer cannot take: sample counts, label shape/range, sample shape."""
    if len(x) != len(y):
        raise DataError(f"x has {len(x)} samples but y has {len(y)}")
    if len(x) < trainer.batch:
        raise DataError(f"the data set has {len(x)} samples, fewer than one batch ({trainer.batch})")
    trainer.check_labels(y, len(y))
    sample = tuple(trainer.manifest.inputs[0].shape[1:])
    if tuple(x.shape[1:]) != sample:
        raise DataError(f"samples in x have shape {tuple(x.shape[1:])}, the model takes {sample}")


def evaluate(trainer, x: np.ndarray, y: np.ndarray, loss: float | None = None) -> EpochResult:
    """Loss and accuracy (cross_entropy: argmax, bce_with_logits: logit > 0) or MSE over whole
    batches. `loss` replaces the loss of the predictions (fit: the mean over the epoch's steps)."""
    check(trainer, x, y)
    metric, score = SCORES[trainer.manifest.loss]
    pairs = [score(trainer.predict(x[idx]).astype(np.float64), y[idx]) for idx in _batches(len(x), trainer.batch, None)]
    losses, values = zip(*pairs)
    return EpochResult(float(np.mean(losses)) if loss is None else loss, metric, float(np.mean(values)))


def fit(trainer, x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0,
        on_step: Callable[[], None] | None = None) -> Iterator[EpochResult]:
    """Train `epochs` epochs (the last incomplete batch of each epoch is dropped)."""
    check(trainer, x, y)
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
