"""The microcontroller speed cells of issue 19: instructions per training step under QEMU (plain SGD,
batch 1, the deterministic batch of `mcu.fake_data`), trainer code and RAM, for the 64-32-16-4 MLP
on three cores, a small 2-D CNN and the 1-D CNN suite model.

    python -m benchmarks.mcu_speed        # prints one markdown table (about a minute)"""
from __future__ import annotations

import sys
import tempfile
from functools import cache
from pathlib import Path

from torch import nn

import codegen
from benchmarks import flops, mcu
from benchmarks.models import LR, SUITE, Suite


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(100, 10))


SMALL_CNN = Suite("small_cnn", small_cnn, (1, 12, 12), "cross_entropy", 10)
CELLS = [("mlp", "cortex-m4f"), ("mlp", "cortex-m3"), ("mlp", "rv32imafc"), ("small_cnn", "cortex-m4f"),
         ("cnn1d", "cortex-m4f"), ("cnn1d", "rv32imafc")]


@cache
def folder(work: Path, name: str, batch: int = 1) -> tuple[Path, int]:
    """The model's trainer (plain SGD, no federated copy) built in `work`, and its FLOP per step."""
    suite = SMALL_CNN if name == SMALL_CNN.name else next(s for s in SUITE if s.name == name)
    model = suite.export(batch, work / f"{name}_b{batch}.onnx")
    codegen.generate(model, work / f"{name}_b{batch}", loss=suite.loss, lr=LR, name=name, federated=False)
    return work / f"{name}_b{batch}", flops.per_step(model, suite.loss)


@cache
def cell(work: Path, name: str, target: str, batch: int = 1) -> tuple[int, mcu.McuResult]:
    """The model's FLOP per step and its result on `target` (measured once: the README's suite
    table shares cells with CELLS)."""
    build, fl = folder(work, name, batch)
    return fl, mcu.measure(build, codegen.manifest.read(build), target, steps=2)


def measure(work: Path) -> list[tuple[str, str, int, mcu.McuResult]]:
    """(model, target, FLOP per step, result) per cell."""
    return [(name, target, *cell(work, name, target)) for name, target in CELLS]


def figures(work: Path) -> tuple[float, ...]:
    """Per cell: instructions per step, per FLOP (two decimals), trainer code bytes (the README table
    that benchmarks/readme_figures.py checks)."""
    return tuple(n for _, _, fl, r in measure(work)
                 for n in (round(r.insns_per_step), round(r.insns_per_step / fl, 2), r.code))


def table(rows) -> str:
    lines = ["| model | target | insns/step | insns/FLOP | RAM | trainer code |", "|---|---|---|---|---|---|"]
    for name, target, fl, r in rows:
        lines.append(f"| {name} | {target} | {r.insns_per_step:,.0f} | {r.insns_per_step / fl:.2f} | "
                     f"{r.ram:,} B (stack {r.stack} B) | {r.code:,} B |")
    return "\n".join(lines)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mcu-speed-") as tmp:
        print(table(measure(Path(tmp))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
