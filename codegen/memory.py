"""Stage 3: the static memory plan. Every activation and gradient gets an offset in one arena;
buffers whose lifetimes (schedule steps) do not overlap share bytes. Views share their source's
buffer. The plan is validated for overlaps every time it is made."""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import numpy as np

from . import ops
from .ir import ACT
from .training import UPDATED, TrainingGraph

ALIGN = 16  # bytes; keeps every buffer aligned for vector loads


@dataclass
class Buffer:
    name: str
    offset: int  # bytes into the arena
    size: int  # bytes (aligned)
    start: int  # schedule step that writes it
    end: int  # last schedule step that reads it (len(schedule) for the returned loss)


@dataclass
class MemoryPlan:
    buffers: dict[str, Buffer]
    alias: dict[str, str]  # view / in-place tensor -> tensor whose buffer it uses
    arena_bytes: int
    naive_bytes: int  # every activation/gradient separate: no reuse, in-place or fusion
    lower_bound: int  # peak of live bytes over the schedule: no offset assignment can beat it
    steps: int
    order: str  # which placement order won

    def root(self, name: str) -> str:
        return self.alias.get(name, name)

    def live_bytes(self) -> list[int]:
        """Bytes of buffers live at each schedule step (the timeline of the arena)."""
        return live_bytes(((b.start, b.end, b.size) for b in self.buffers.values()), self.steps)

    def to_json(self) -> dict:
        return {"arena_bytes": self.arena_bytes, "lower_bound_bytes": self.lower_bound,
                "naive_bytes": self.naive_bytes, "steps": self.steps, "placement_order": self.order,
                "live_bytes": self.live_bytes(),
                "buffers": [asdict(b) for b in sorted(self.buffers.values(), key=lambda b: (b.offset, b.start))],
                "aliases": self.alias}


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _reads(nodes) -> dict[str, list[int]]:
    reads: dict[str, list[int]] = {}
    for step, node in enumerate(nodes):
        for name in node.inputs:
            reads.setdefault(name, []).append(step)
    return reads


def aliases(tg: TrainingGraph) -> dict[str, str]:
    """Views share their source's buffer; an in-place op's output takes over the buffer of an
    input of the same size that dies at that op (read by no later step, through any alias)."""
    graph = tg.graph
    last = {name: max(steps) for name, steps in _reads(graph.nodes).items()}
    alias: dict[str, str] = dict(tg.fused)  # a fused gradient is written into its parameter
    alias.update({t.name: t.in_place_of for t in graph.tensors.values() if t.role == UPDATED})
    root_last: dict[str, int] = {}  # last read of a buffer through any of its aliases so far

    def dies_at(r: str, step: int) -> bool:
        t = graph.tensors[r]
        return t.role == ACT and r != tg.loss and root_last.get(r, last.get(r, -1)) <= step

    for step, node in enumerate(graph.nodes):
        op, out = ops.lookup(node), node.outputs[0]
        roots = [alias.get(i, i) for i in node.inputs if i]
        if op.view:
            target = roots[0]
        elif op.inplace is True or callable(op.inplace) and op.inplace(node, graph):
            like = graph.tensors[out]
            target = next((r for r in roots if (graph.tensors[r].size, graph.tensors[r].dtype) == (like.size, like.dtype)
                           and dies_at(r, step)), None)
        else:
            continue
        if target is not None:
            alias[out] = target
            root_last[target] = max(root_last.get(target, last.get(target, -1)), last.get(out, -1))
    return alias


def lifetimes(tg: TrainingGraph, alias: dict[str, str]) -> dict[str, tuple[int, int]]:
    graph, nodes = tg.graph, tg.graph.nodes
    life: dict[str, list[int]] = {}
    for step, node in enumerate(nodes):
        for name in node.outputs:
            r = alias.get(name, name)
            if name and graph.tensors[r].role == ACT and r not in life:
                life[r] = [step, step]
        for name in node.inputs:
            r = alias.get(name, name)
            if r in life:
                life[r][1] = step
    life[tg.loss][1] = len(nodes)
    return {k: (v[0], v[1]) for k, v in life.items()}


# Placement orders tried; the plan keeps the smallest arena (first wins ties: deterministic).
ORDERS = {
    "size": lambda life, size, n: (-size[n], life[n][0], n),
    "start": lambda life, size, n: (life[n][0], -size[n], n),
    "duration": lambda life, size, n: (-(life[n][1] - life[n][0]), -size[n], n),
    "size*duration": lambda life, size, n: (-size[n] * (life[n][1] - life[n][0] + 1), n),
}


def _place(names, life, sizes, best_fit: bool) -> list[Buffer]:
    """Greedy: each buffer in a gap that is free during its whole lifetime: the lowest such gap
    (first fit) or the smallest one that fits (best fit); above everything if none fits.
    Vectorised over the buffers placed so far: large graphs have thousands."""
    start = np.array([life[n][0] for n in names], np.int64)
    end = np.array([life[n][1] for n in names], np.int64)
    size = np.array([sizes[n] for n in names], np.int64)
    offset = np.zeros(len(names), np.int64)
    for i in range(len(names)):
        live = (start[:i] <= end[i]) & (start[i] <= end[:i])
        lo = offset[:i][live]
        offset[i] = _gap(lo, lo + size[:i][live], size[i], best_fit)
    return [Buffer(n, int(o), int(z), int(s), int(e)) for n, o, z, s, e in zip(names, offset, size, start, end)]


def _gap(lo: np.ndarray, hi: np.ndarray, size: int, best_fit: bool) -> int:
    """The offset for `size` bytes among busy [lo, hi) ranges: the lowest free gap that fits
    (first fit; gaps are scanned by offset) or the smallest (best fit, ties to the lowest). Ranges
    starting at the same offset may come in any order: all but the first leave no gap."""
    order = lo.argsort()
    lo, tops = lo[order], np.maximum.accumulate(np.concatenate(([0], hi[order])))
    gaps = lo - tops[:-1]
    fits = np.flatnonzero(gaps >= size)
    if not fits.size:
        return int(tops[-1])
    return int(tops[fits[np.argmin(gaps[fits])]] if best_fit else tops[fits[0]])


def _naive(tg: TrainingGraph) -> int:
    """Every activation and gradient in its own buffer: no reuse, no in-place, no fusion."""
    graph = tg.graph
    return sum(_aligned(graph.tensors[o].nbytes) for n in graph.nodes if not ops.lookup(n).view
               for o in n.outputs if o and graph.tensors[o].role == ACT)


def plan(tg: TrainingGraph) -> MemoryPlan:
    alias = aliases(tg)
    life = lifetimes(tg, alias)
    sizes = {n: _aligned(tg.graph.tensors[n].nbytes) for n in life}
    steps = len(tg.graph.nodes)
    # The peak of live bytes: no placement of these lifetimes can use less.
    bound = max(live_bytes(((*life[n], sizes[n]) for n in life), steps), default=0)
    best = None
    for order, key in ORDERS.items():
        names = sorted(life, key=lambda n: key(life, sizes, n))
        for fit in ("first fit", "best fit"):
            candidate = _try(names, life, sizes, fit, order)
            if best is None or candidate[0] < best[0]:
                best = candidate
    if best[0] > bound * (1 + TOLERANCE):
        best = _refine(best, life, sizes, bound)
    arena, order, names, placed = best
    result = MemoryPlan({b.name: b for b in placed}, alias, arena, _naive(tg), bound, steps, order)
    validate(result)
    return result


def _try(names, life, sizes, fit: str, label: str):
    placed = _place(names, life, sizes, fit == "best fit")
    return max((b.offset + b.size for b in placed), default=0), f"{label}, {fit}", names, placed


# The local search runs only when the greedy arena is more than TOLERANCE above the lower bound,
# and for at most REFINE_PLACEMENTS buffer placements (100 tries up to 50 buffers, fewer above;
# about a second on 2,000 buffers): a work budget, not a clock, so plans are reproducible.
TOLERANCE = 0.001
REFINE_PLACEMENTS = 10_000


def _refine(best, life, sizes, bound: int, tries: int = 100):
    """Local search from the best greedy order: swap a few neighbours, keep the change if the
    arena does not grow. A fixed seed keeps the plan deterministic."""
    rng = random.Random(0)
    for _ in range(min(tries, REFINE_PLACEMENTS // (2 * len(best[2])))):
        names = list(best[2])
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(names) - 1)
            names[i], names[i + 1] = names[i + 1], names[i]
        for fit in ("first fit", "best fit"):
            candidate = _try(names, life, sizes, fit, "local search")
            if candidate[0] <= best[0]:
                best = candidate
        if best[0] <= bound:
            break
    return best


def live_bytes(intervals, steps: int) -> list[int]:
    """Sum of the sizes live at each step, for (first step, last step, bytes) intervals."""
    start, end, size = np.array([*intervals], np.int64).reshape(-1, 3).T
    change = np.zeros(steps + 2, np.int64)
    np.add.at(change, start, size)
    np.add.at(change, end + 1, -size)
    return np.cumsum(change[:-1]).tolist()


def validate(p: MemoryPlan) -> None:
    """No two buffers live at the same step may share a byte; all fit in the arena."""
    bufs = sorted(p.buffers.values(), key=lambda b: b.offset)
    for i, a in enumerate(bufs):
        if a.offset < 0 or a.offset + a.size > p.arena_bytes or a.offset % ALIGN:
            raise AssertionError(f"memory plan: buffer '{a.name}' out of the arena or misaligned")
        for b in bufs[i + 1:]:
            if b.offset >= a.offset + a.size:
                break
            if a.start <= b.end and b.start <= a.end:
                raise AssertionError(f"memory plan: '{a.name}' and '{b.name}' overlap while both live")
