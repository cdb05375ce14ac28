"""Budgeted sparse update (`inspect --ram-budget`, `generate --auto-sparse`): the scheme search of
MIT's Tiny Training Engine (Lin et al. 2022, "On-Device Training Under 256KB Memory", sec. 3.3).

A scheme trains the classifier (the last layer: `--train-last 1`), the biases of the last K
layers that have one (`--train-bias-last K`) and the first FRACTION of the output channels of a
few weights (`--train-channels W:FRACTION`): a set of selector options, so it plans and builds
like any selection the user types, with the user's other options (optimizer, batch, `--update
int8`: a scheme that cannot be built with them is skipped). The classifier trains whenever it
fits (as in TTE); when it does not, the schemes are biases only. A scheme's score is TTE's
additive accuracy proxy:

    score = gain(head + last K biases) + sum over trained weights W at ratio r of
            [gain(head + biases down to W's layer + W at r) - gain(head + biases down to W's layer)]

`gain` is either measured (TTE's contribution analysis: the held-out loss reduction of a short
fine-tune of the scheme's host trainer on calibration samples, `Measured`) or TTE's published
heuristics (`heuristic_gain`): later layers count more, biases come first (a weight trains only
with the biases of every layer after it, which the backward pass reaches anyway), the first
pointwise conv of an inverted-residual block counts double, more channels count more with
diminishing returns. The proxy only shortlists: the PROPOSALS best schemes by it are ranked by
the gain of each whole scheme (measured gains are not additive: on the shapes study of
benchmarks/sparse_accuracy.py the proxy preferred half the channels with the biases of 16 layers
to a quarter with those of all 23, and the latter measured, and trained, better). Scores are
ranks, not accuracies.

The search is bounded: the LAYERS best weights by the heuristic order, ratios RATIOS, K on a
grid of powers of two; every proposal's RAM comes from the real memory planner. It assumes RAM
grows with K, with the ratio and with the set of weights (true of the plans: more trained
tensors keep more activations), so it binary-searches the largest K per weight set and skips a
weight at ratios above one that does not fit; everything it proposes was planned and fits."""
from __future__ import annotations

import glob
import math
import shlex
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from . import channels, fit, npz, training
from .budget import ram_bytes
from .errors import DataError, FitError, McutrainError, OptionError
from .ir import Graph

RATIOS = (0.125, 0.25, 0.5, 1.0)  # the channel fractions TTE searches (0 = not trained)
LAYERS = 4  # weight candidates: the best LAYERS channel-splittable weights by the heuristic order
PROPOSALS = 5  # schemes `inspect` shows
# The heuristic's gains: the classifier, each bias (divided by its layer's rank from the end: the
# gains plateau as K grows), each weight (divided by its layer's rank, x PW1 for the first
# pointwise conv of an inverted-residual block, x sqrt(ratio)).
HEAD, BIAS, WEIGHT, PW1 = 4.0, 1.0, 2.0, 2.0
# Contribution analysis: the fine-tune of each measured candidate.
EPOCHS, MAX_SAMPLES, HELD_OUT = 3, 512, 0.25
# Ops an inverted-residual block has between its first pointwise conv and the depthwise conv.
_BETWEEN = {"Relu", "Clip", "BatchNormalization", "HardSwish", "QuantizeLinear", "DequantizeLinear", "Identity"}


@dataclass(frozen=True)
class Scheme:
    head: bool  # the last layer (--train-last 1)
    bias_last: int  # --train-bias-last K (0: none)
    weights: tuple[tuple[str, float], ...] = ()  # (weight, fraction) for --train-channels

    def selection(self, freeze: list[str] | None = None) -> training.Selection:
        return training.Selection(freeze=freeze or None, last=1 if self.head else None,
                                  bias_last=self.bias_last or None,
                                  channels=[f"{glob.escape(w)}:{r:g}" for w, r in self.weights] or None)

    def apply(self, spec):
        """`spec` (an api.Spec: the user's other options) with this scheme's trainable set; its
        --freeze patterns still apply. The one place a scheme meets the rest of the options."""
        return replace(spec, selection=self.selection(spec.selection.freeze))

    def options(self) -> str:
        """The options a user would type (names escaped for glob, quoted for the shell)."""
        flags = (["--train-last 1"] if self.head else []) + \
            ([f"--train-bias-last {self.bias_last}"] if self.bias_last else [])
        return " ".join(flags + [f"--train-channels {shlex.quote(c)}" for c in self.selection().channels or []])


@dataclass(frozen=True)
class Candidate:
    """A weight whose channels may train: its layer's rank from the end (1: the last layer), whether
    it is an inverted-residual block's first pointwise conv, and `reach`: the K of
    --train-bias-last that takes every bias from its layer on (0 when the classifier has them all)."""
    weight: str
    rank: int
    pw1: bool
    reach: int

    @property
    def value(self) -> float:
        return WEIGHT * (PW1 if self.pw1 else 1.0) / self.rank


@dataclass
class Proposal:
    scheme: Scheme
    memory: dict[str, int]
    score: float

    @property
    def ram(self) -> int:
        return ram_bytes(self.memory)


@dataclass
class Space:
    """The candidates of one model: its biases (graph order), weight candidates (best first), the
    grid of K values searched, and how many of the last biases are the classifier's own."""
    biases: list[str]
    candidates: list[Candidate]
    grid: list[int]
    head_biases: int

    def ks(self, lowest: int = 0) -> list[int]:
        """The K values of schemes that train the classifier and at least the last `lowest` biases
        (0: any K within the classifier's own biases, which it trains anyway)."""
        return [0] * (lowest == 0) + [k for k in self.grid if k >= lowest and k > self.head_biases]

    @classmethod
    def of(cls, graph: Graph, freeze: list[str] | None = None) -> Space:
        allowed = set(training.select_trainable(graph, training.Selection(freeze=freeze or None)))
        layers = training._layers(graph)
        biases = training._biases(graph)
        own = len(set(biases) & set(layers[-1]))  # the classifier's biases: trained with it
        rank = {name: len(layers) - k for k, layer in enumerate(layers) for name in layer}
        order = {name: k for k, layer in enumerate(layers) for name in layer}
        weights = channels.weights(graph)
        reach = {w: sum(order[b] >= order[w] for b in biases) for w in weights}
        found = [Candidate(w, rank[w], _is_pw1(graph, node), reach[w] if reach[w] > own else 0)
                 for w, (node, _) in weights.items() if w in allowed and rank[w] > 1]
        found.sort(key=lambda c: (-c.value, c.rank))
        best = found[:LAYERS]
        grid = {len(biases), *(c.reach for c in best)} | {2 ** k for k in range(len(biases).bit_length())}
        return cls(biases, best, sorted(k for k in grid if 0 < k <= len(biases)), own)


def _is_pw1(graph: Graph, node) -> bool:
    """A 1x1 Conv whose output reaches a depthwise Conv through activations/normalization/QDQ only."""
    w = graph.shape(node.inputs[1])
    if node.op != "Conv" or any(d != 1 for d in w[2:]):
        return False
    y = node.outputs[0]
    for _ in range(8):
        readers = [n for n in graph.nodes if y in n.inputs]
        if len(readers) != 1:
            return False
        nxt = readers[0]
        if nxt.op == "Conv":
            return nxt.attrs.get("group", 1) > 1 and nxt.attrs.get("group", 1) == graph.shape(nxt.inputs[1])[0]
        if nxt.op not in _BETWEEN:
            return False
        y = nxt.outputs[0]
    return False


def heuristic_gain(space: Space) -> Callable[[Scheme], float]:
    """TTE's published observations as a gain (see the module docstring)."""
    value = {c.weight: c.value for c in space.candidates}

    def gain(s: Scheme) -> float:
        return (HEAD if s.head else 0.0) + sum(BIAS / j for j in range(1, s.bias_last + 1)) + \
            sum(value[w] * math.sqrt(r) for w, r in s.weights)
    return gain


class Measured:
    """TTE's contribution analysis: gain(scheme) = held-out loss before - after a short fine-tune
    (EPOCHS epochs on 1 - HELD_OUT of at most MAX_SAMPLES calibration samples, seeded split) of
    the scheme's host trainer. `trainer_of(scheme)` builds one (the cffi build, cached);
    `progress(text)`: a context manager around each candidate's build and fine-tune (the CLI's spinner)."""

    def __init__(self, trainer_of: Callable, x: np.ndarray, y: np.ndarray, progress: Callable = nullcontext):
        self.trainer_of, self.progress, self.cache = trainer_of, progress, {}
        n = min(len(x), MAX_SAMPLES)
        order = np.random.default_rng(0).permutation(len(x))[:n]
        held = max(1, int(n * HELD_OUT))
        self.train, self.held = (x[order[held:]], y[order[held:]]), (x[order[:held]], y[order[:held]])
        self.base: float | None = None

    def __call__(self, s: Scheme) -> float:
        if s not in self.cache:
            with self.progress(f"contribution analysis: building and fine-tuning {s.options()}"):
                self.cache[s] = self._gain(s)
        return self.cache[s]

    def _gain(self, s: Scheme) -> float:
        try:
            trainer = self.trainer_of(s)
        except OptionError:  # e.g. --freeze leaves this base scheme nothing to train: nothing gained
            return 0.0
        if len(self.held[0]) < trainer.batch or len(self.train[0]) < trainer.train_batch:
            raise DataError(f"contribution analysis needs at least {math.ceil(trainer.batch / HELD_OUT)} "
                            f"calibration samples (a held-out batch and a training batch); the file has "
                            f"{len(self.held[0]) + len(self.train[0])}")
        if self.base is None:
            self.base = fit.evaluate(trainer, *self.held).loss
        for _ in fit.fit(trainer, *self.train, EPOCHS):
            pass
        return self.base - fit.evaluate(trainer, *self.held).loss


def score(space: Space, gain: Callable[[Scheme], float], s: Scheme) -> float:
    """TTE's additive proxy: the bias part plus each weight's gain over its bias-only base."""
    reach = {c.weight: c.reach for c in space.candidates}
    return gain(Scheme(s.head, s.bias_last)) + sum(
        gain(Scheme(True, reach[w], ((w, r),))) - gain(Scheme(True, reach[w])) for w, r in s.weights)


def propose(space: Space, memory_of: Callable[[Scheme], dict], budget: int, gain: Callable[[Scheme], float],
            limit: int = PROPOSALS) -> list[Proposal]:
    """The best `limit` schemes that fit `budget` bytes of RAM, best first; FitError naming the
    smallest scheme and its size when none fits."""
    planned: dict[Scheme, dict | None] = {}

    def memory(s: Scheme) -> dict | None:
        if s not in planned:
            try:
                planned[s] = memory_of(s)
            except McutrainError:  # e.g. --freeze leaves this scheme nothing to train
                planned[s] = None
        return planned[s]

    def fits(s: Scheme) -> bool:
        return memory(s) is not None and ram_bytes(planned[s]) <= budget

    kmax = _largest(fits, lambda k: Scheme(True, k), space.ks())
    if kmax is not None:
        found = [Scheme(True, kmax), *_with_weights(space, fits, kmax, lambda s: score(space, gain, s), limit)]
    else:  # the classifier does not fit: biases only
        found = [Scheme(False, k) for k in [_largest(fits, lambda k: Scheme(False, k), space.grid)] if k]
    if not found:
        smallest = [s for s in (Scheme(False, 1), Scheme(True, 0)) if memory(s) is not None]
        _refuse(min(smallest, key=lambda s: ram_bytes(planned[s]), default=None), planned, budget)
    # The additive proxy picks the finalists from single-weight measurements; each finalist is then
    # scored as a whole, since measured gains do not add up (a weight's channels add little to what
    # the biases of every layer already learn). For the heuristics the two are the same sum.
    ranked = sorted({s: gain(s) for s in found}.items(), key=lambda p: (-p[1], ram_bytes(planned[p[0]])))
    return [Proposal(s, planned[s], value) for s, value in ranked[:limit]]


def _largest(fits: Callable[[Scheme], bool], make: Callable[[int], Scheme], ks: list[int]) -> int | None:
    """The largest k of the ascending `ks` whose scheme fits (RAM grows with k), or None."""
    lo, hi, best = 0, len(ks) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(make(ks[mid])):
            best, lo = ks[mid], mid + 1
        else:
            hi = mid - 1
    return best


def _with_weights(space: Space, fits, kmax: int, score_of, limit: int) -> list[Scheme]:
    """Per weight set (each candidate alone at each ratio, the best m together), the head and the
    largest K that fits; weight sets by their best possible score, stopping once `limit` schemes
    beat every set left (branch and bound)."""
    alone = set()  # (weight, ratio) that fit with the head and the biases down to the weight
    for c in space.candidates:
        for r in RATIOS:
            if c.reach > kmax or not fits(Scheme(True, c.reach, ((c.weight, r),))):
                break  # larger ratios do not fit either
            alone.add((c.weight, r))
    graph_order = sorted(space.candidates, key=lambda c: -c.rank)
    sets = [((c.weight, r),) for c in space.candidates for r in RATIOS if (c.weight, r) in alone]
    sets += [tuple((c.weight, r) for c in graph_order if c in space.candidates[:m])
             for m in range(2, len(space.candidates) + 1) for r in RATIOS
             if all((c.weight, r) in alone for c in space.candidates[:m])]
    reach = {c.weight: c.reach for c in space.candidates}
    bound = {ws: score_of(Scheme(True, kmax, ws)) for ws in sets}  # the best score a set can reach
    chosen: list[tuple[float, Scheme]] = []
    for ws in sorted(sets, key=lambda ws: -bound[ws]):
        if len(chosen) >= limit and chosen[limit - 1][0] >= bound[ws]:
            break
        lowest = max(reach[w] for w, _ in ws)
        k = _largest(fits, lambda k: Scheme(True, k, ws), [k for k in space.ks(lowest) if k <= kmax])
        if k is not None:
            s = Scheme(True, k, ws)
            chosen = sorted([*chosen, (score_of(s), s)], key=lambda p: -p[0])
    return [s for _, s in chosen]


def _refuse(smallest: Scheme | None, planned: dict, budget: int) -> None:
    what = "no scheme can be planned" if smallest is None else \
        f"the smallest, '{smallest.options()}', needs {ram_bytes(planned[smallest]):,} B (arena " \
        f"{planned[smallest]['arena_bytes']:,} B, trainable parameters {planned[smallest]['param_bytes']:,} B)"
    raise FitError(f"no sparse update scheme fits --ram-budget {budget:,} B: {what}. Raise the budget, use "
                   "a smaller --batch, plain SGD, --no-federated, or int8 frozen layers (--quantize int8)")


def calibration_data(path: Path, required: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """x and y of the calibration .npz for contribution analysis (a `train --data` file); None
    for a file without labels y when not `required` (generate --quantize reads its inputs only)."""
    if not required and path.is_file():
        with npz.Archive(path, "an .npz file of calibration samples") as archive:
            if "y" not in archive.names:
                return None
    return fit.load_data(path)
