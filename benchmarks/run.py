"""One command for the benchmark tables: `python -m benchmarks.run [--quick] [--out FILE]`.

Per suite model and batch, side by side in one run on this machine: the generated C (standalone
binary timing the loop, and through cffi), PyTorch (eager, CPU, one thread) and onnxruntime-training
(its own cached venv), each training on one fixed batch with plain SGD; instructions per step
(callgrind) and FLOPs per step; the memory each needs. Then the microcontroller figures under QEMU.
Times are medians of repeated loops; ratios are other / generated C (standalone)."""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import codegen
from benchmarks import flops, mcu, ort_env, standalone
from benchmarks.models import LR, SUITE
from codegen.errors import ToolchainError

QUICK_MODELS = ["mlp"]
MCU_TARGETS = ["cortex-m4f", "rv32imafc"]


def _steps(fl: int, budget: float) -> int:
    """Steps per timed loop: about `budget` GFLOP, at least 5."""
    return max(5, int(budget * 1e9 / max(fl, 1)))


def cffi_seconds(folder: Path, suite, batch: int, steps: int, repeats: int) -> float:
    trainer = codegen.load_host(folder)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch, *suite.sample)).astype(np.float32)
    y = (np.arange(batch) % suite.outputs).astype(np.int32) if suite.loss == "cross_entropy" else \
        ((np.arange(batch * suite.outputs) % 5) * 0.25).astype(np.float32).reshape(batch, -1)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(x, y)
        times.append((time.perf_counter() - t0) / steps)
    return statistics.median(times)


def torch_run(suite, batch: int, steps: int, repeats: int) -> dict:
    done = subprocess.run([sys.executable, "-m", "benchmarks.torch_step", suite.name, str(batch), str(steps),
                           str(repeats)], check=True, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    return json.loads(done.stdout.strip().splitlines()[-1])


def ort_run(suite, batch: int, model: Path, work: Path, steps: int, repeats: int) -> dict:
    folder = ort_env.artifacts(model, suite.loss, work / f"ort_{suite.name}_b{batch}")
    x = np.random.default_rng(0).uniform(-1, 1, (batch, *suite.sample)).astype(np.float32)
    np.save(folder / "x.npy", x)
    return ort_env.time_steps(folder, suite.loss, batch, suite.outputs, steps, repeats, LR)


def host_row(suite, batch: int, work: Path, quick: bool, with_ort: bool) -> dict:
    model = suite.export(batch, work / f"{suite.name}_b{batch}.onnx")
    folder = work / f"{suite.name}_b{batch}"
    # federated=False: the trainer alone, like the hand-written reference (no round-start copy).
    summary = codegen.generate(model, folder, loss=suite.loss, lr=LR, name=suite.name, federated=False)
    fl = flops.per_step(model, suite.loss)
    steps, repeats = _steps(fl, 0.002 if quick else 0.05), 3 if quick else 7
    exe = standalone.build(folder, codegen.manifest.read(folder))
    mem = summary["memory"]
    row = {"model": suite.name, "batch": batch, "flops": fl,
           "c": standalone.seconds_per_step(exe, steps, repeats),
           "cffi": cffi_seconds(folder, suite, batch, steps, repeats),
           "insns": standalone.instructions_per_step(exe, 2 if fl > 1e7 else 5),
           "c_bytes": mem["arena_bytes"] + mem["param_bytes"] + mem["optimizer_state_bytes"]}
    t = torch_run(suite, batch, steps, repeats)
    row.update(torch=t["seconds"], torch_rss=t["peak_rss"])
    if with_ort:
        o = ort_run(suite, batch, model, work, steps, repeats)
        row.update(ort=o["seconds"], ort_rss=o["peak_rss"])
    return row


def mcu_rows(work: Path, names: list[str], targets: list[str]) -> list[dict]:
    rows = []
    for name in names:
        for batch in (1, 32):
            folder = work / f"{name}_b{batch}"
            m = codegen.manifest.read(folder)
            fl = flops.per_step(work / f"{name}_b{batch}.onnx", next(s.loss for s in SUITE if s.name == name))
            for target in targets:
                r = mcu.measure(folder, m, target, steps=2)
                rows.append({"model": name, "batch": batch, "target": target, "flops": fl, "result": r})
    return rows


def _us(s):
    return "-" if s is None else f"{s * 1e6:,.1f}"


def _x(a, b):
    return "-" if a is None or b is None else f"{a / b:,.1f}x"


def _ratio(a, b):
    return "-" if not a or not b else f"{a / b:.2f}"


def _kb(n):
    return "-" if n is None else (f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 1024:,.1f} KiB")


def host_table(rows: list[dict]) -> str:
    head = ("| model | batch | FLOP/step | C µs | C via cffi µs | PyTorch µs | ORT µs | PyTorch / C | ORT / C "
            "| C insns/step | FLOP/insn | C memory | PyTorch peak RSS | ORT peak RSS |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        ins = r["insns"]
        lines.append(f"| {r['model']} | {r['batch']} | {r['flops']:,} | {_us(r['c'])} | {_us(r['cffi'])} | "
                     f"{_us(r['torch'])} | {_us(r.get('ort'))} | {_x(r['torch'], r['c'])} | "
                     f"{_x(r.get('ort'), r['c'])} | {'-' if ins is None else f'{ins:,}'} | "
                     f"{_ratio(r['flops'], ins)} | {_kb(r['c_bytes'])} | "
                     f"{_kb(r['torch_rss'])} | {_kb(r.get('ort_rss'))} |")
    return "\n".join(lines)


def mcu_table(rows: list[dict]) -> str:
    lines = ["| model | batch | target | insns/step | insns/FLOP | RAM (arena+params+state+stack) | trainer code |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        res = r["result"]
        if res is None:
            lines.append(f"| {r['model']} | {r['batch']} | {r['target']} | does not fit the target's RAM | | | |")
            continue
        ins = res.insns_per_step
        lines.append(f"| {r['model']} | {r['batch']} | {r['target']} | {'-' if ins is None else f'{ins:,.0f}'} | "
                     f"{_ratio(ins, r['flops'])} | {res.ram:,} B (stack {res.stack} B) | "
                     f"{res.code:,} B |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the MLP only, short loops (CI, < 1 min)")
    ap.add_argument("--no-ort", action="store_true", help="skip onnxruntime-training")
    ap.add_argument("--no-mcu", action="store_true", help="skip the QEMU runs")
    ap.add_argument("--out", type=Path, help="also write the tables (markdown) here")
    args = ap.parse_args(argv)
    # --quick uses ORT only if its venv is already cached: creating it takes minutes.
    with_ort = not args.no_ort and (not args.quick or ort_env.ready())
    names = QUICK_MODELS if args.quick else [s.name for s in SUITE]
    with tempfile.TemporaryDirectory(prefix="mcutrain-bench-") as tmp:
        work = Path(tmp)
        rows = [host_row(s, b, work, args.quick, with_ort) for s in SUITE if s.name in names for b in (1, 32)]
        text = "Host training step (one thread; ratios: how many times longer than the standalone C)\n\n" + \
            host_table(rows)
        print(text, flush=True)
        if not args.no_mcu:
            try:
                table = mcu_table(mcu_rows(work, names, MCU_TARGETS[:1] if args.quick else MCU_TARGETS))
            except ToolchainError as e:  # no cross compiler or QEMU here
                table = f"skipped: {e}"
            print("\nMicrocontroller (QEMU instruction counts; plain SGD)\n\n" + table)
            text += "\n\nMicrocontroller (QEMU instruction counts; plain SGD)\n\n" + table
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
