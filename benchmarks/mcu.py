"""On the microcontroller: instructions per training step under QEMU (the harness of `mcutrain
build`), and what the trainer costs the firmware: RAM (arena + parameters + optimizer state +
the deepest stack of train_step) and code (the .text of the trainer's object file alone)."""
from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from elftools.elf.elffile import ELFFile

from codegen import budget, firmware, qemu, targets
from codegen.build import C_FLAGS
from codegen.errors import FitError
from codegen.manifest import Manifest


@dataclass
class McuResult:
    insns_per_step: float | None
    ram: int  # arena + parameters + optimizer state + stack
    stack: int
    code: int


def fake_data(m: Manifest, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """`steps` batches of deterministic samples and labels of the right kind."""
    rng = np.random.default_rng(0)
    n = steps * m.batch
    x = rng.uniform(-1, 1, (n, *m.inputs[0].shape[1:])).astype(np.float32)
    if m.labels.dtype == "int32":
        return x, rng.integers(0, m.classes, n)
    return x, rng.uniform(0, 1, (n, *m.labels.shape[1:])).astype(np.float32)


def callgraph(ci: str) -> tuple[dict[str, int], dict[str, set[str]]]:
    """Frame bytes per function and call edges from gcc's -fcallgraph-info=su (static functions
    are titled 'file.c:name')."""
    name = lambda t: t.split(":")[-1]  # noqa: E731
    frames = {name(t): int(b) for t, b in re.findall(r'node: \{ title: "([^"]+)" label: "[^"]*?\\n(\d+) bytes', ci)}
    edges: dict[str, set[str]] = {}
    for src, dst in re.findall(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"', ci):
        edges.setdefault(name(src), set()).add(name(dst))
    return frames, edges


def reachable(edges: dict[str, set[str]], root: str) -> set[str]:
    seen, todo = set(), [root]
    while todo:
        f = todo.pop()
        if f not in seen:
            seen.add(f)
            todo.extend(edges.get(f, ()))
    return seen


def trainer_cost(folder: Path, m: Manifest, target: targets.Target) -> tuple[int, int]:
    """(code bytes, deepest stack bytes) of train_step and what it calls (not predict, save/load
    or the other API functions; C library calls count as 0), the trainer compiled alone."""
    folder, root = folder.resolve(), f"{m.name}_train_step"
    with tempfile.TemporaryDirectory() as tmp:
        obj = Path(tmp) / "trainer.o"
        specs = [f for f in target.ldflags if f.startswith("--specs")]  # the C library's headers
        subprocess.run([target.cc, *C_FLAGS, *target.cflags, *specs, "-ffunction-sections", "-fcallgraph-info=su",
                        f"-I{folder}", "-c", str(folder / f"{m.name}.c"), "-o", str(obj)], check=True, cwd=tmp)
        frames, edges = callgraph(obj.with_suffix(".ci").read_text())
        used = reachable(edges, root)
        with open(obj, "rb") as f:
            code = sum(s["sh_size"] for s in ELFFile(f).iter_sections() if s.name.startswith(".text.")
                       and s.name[len(".text."):] in used)

    def depth(f: str) -> int:
        return frames.get(f, 0) + max((depth(g) for g in edges.get(f, ())), default=0)

    return code, depth(root)


def measure(folder: Path, m: Manifest, target_name: str, steps: int = 4) -> McuResult | None:
    """None when the model does not fit the target."""
    target = targets.load(target_name)
    x, y = fake_data(m, steps)
    try:
        firmware.build(folder, target_name, x, y, epochs=1)
    except FitError:
        return None
    run = qemu.run(folder, target_name, timeout=300)
    if run.code:
        raise RuntimeError(f"firmware for {target_name} exited with {run.code}:\n{run.output[-2000:]}")
    code, stack = trainer_cost(folder, m, target)
    ram = budget.ram_bytes(m.memory) + stack
    return McuResult(run.work.per_step if run.work else None, ram, stack, code)
