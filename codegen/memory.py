"""Stage 3: the static memory plan. Every activation and gradient gets an offset in one arena;
buffers whose lifetimes (schedule steps) do not overlap share bytes. Views share their source's
buffer. The plan is validated for overlaps every time it is made."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from . import ops
from .ir import ACT
from .training import TrainingGraph

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
    alias: dict[str, str]  # view tensor -> tensor whose buffer it uses
    arena_bytes: int
    naive_bytes: int  # every buffer separate: what no reuse would cost
    steps: int

    def root(self, name: str) -> str:
        return self.alias.get(name, name)

    def to_json(self) -> dict:
        return {"arena_bytes": self.arena_bytes, "naive_bytes": self.naive_bytes, "steps": self.steps,
                "buffers": [asdict(b) for b in sorted(self.buffers.values(), key=lambda b: (b.offset, b.start))],
                "aliases": self.alias}


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


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


def plan(tg: TrainingGraph) -> MemoryPlan:
    """Greedy best-fit: largest buffers first, each at the lowest offset free during its lifetime."""
    alias = ops.view_roots(tg.graph.nodes)
    life = lifetimes(tg, alias)
    sizes = {n: _aligned(tg.graph.tensors[n].size * 4) for n in life}
    placed: list[Buffer] = []
    for name in sorted(life, key=lambda n: (-sizes[n], life[n][0], n)):
        start, end = life[name]
        busy = sorted((b.offset, b.offset + b.size) for b in placed if b.start <= end and start <= b.end)
        offset = 0
        for lo, hi in busy:
            if offset + sizes[name] <= lo:
                break
            offset = max(offset, hi)
        placed.append(Buffer(name, offset, sizes[name], start, end))
    arena = max((b.offset + b.size for b in placed), default=0)
    result = MemoryPlan({b.name: b for b in placed}, alias, arena, sum(sizes.values()), len(tg.graph.nodes))
    validate(result)
    return result


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
