"""The README's deterministic figures (memory plans, message sizes, fit checks, instruction counts
under QEMU) computed by one script, so the prose cannot drift from what the code does.

    python -m benchmarks.readme_figures            # check: exit 1 naming every stale figure
    python -m benchmarks.readme_figures --write    # put the current figures into README.md

tests/test_readme.py runs the check (the board figures only where the cross toolchains and QEMU
are installed, as in CI). Timing tables come from `python -m benchmarks.run` instead."""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Callable

import numpy as np
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import codegen  # noqa: E402
from benchmarks import int8_fit, int8_kernels, mcu_speed  # noqa: E402
from benchmarks.run import MCU_TARGETS  # noqa: E402
from benchmarks.models import SUITE  # noqa: E402
from codegen import api, blob, channels, firmware, loader, qemu, training  # noqa: E402
from codegen.errors import FitError  # noqa: E402

README = ROOT / "README.md"
DIGITS = ROOT / "examples" / "digits"


@dataclass(frozen=True)
class Figure:
    what: str
    pattern: str  # one group per number (written with thousands separators); a space matches a line break
    compute: Callable[[], tuple[int, ...]]
    boards: bool = False  # needs the cross toolchains and QEMU


def _arena(model: Path, loss: str, batch: int | None = None, fuse: bool = True, momentum: float = 0.0,
           selection: training.Selection = training.Selection(), accumulate: int = 1) -> dict:
    spec = api.Spec(loss, training.Optimizer(momentum=momentum), selection, batch, None, fuse, accumulate)
    _, tg, plan = api.compile_plan(model, spec)
    return api._summary(tg, plan, "m", str(model))["memory"]


@cache
def _workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="readme-figures-"))


@cache
def _suite_model(name: str, batch: int) -> Path:
    suite = next(s for s in SUITE if s.name == name)
    return suite.export(batch, _workdir() / f"{name}_b{batch}.onnx")


def mlp_arena():
    one = _arena(DIGITS / "mlp.onnx", "cross_entropy", batch=1)
    accumulated = _arena(DIGITS / "mlp.onnx", "cross_entropy", batch=1, accumulate=32)
    return one["arena_bytes"], round(one["naive_bytes"] / 1024), accumulated["arena_bytes"]


def mobilenet_choices():
    model = _suite_model("mobilenet", 4)
    return tuple(_arena(model, "cross_entropy", momentum=0.9, selection=s)["arena_bytes"]
                 for s in (training.Selection(), training.Selection(bias_only=True), training.Selection(last=1)))


def mobilenet_channels():
    """Parameter bytes of the head plus 25% of the last conv's channels, with the whole conv, and
    the head alone; the arena of the first (--train-channels)."""
    model = _suite_model("mobilenet", 4)
    sparse, whole, head = (_arena(model, "cross_entropy", momentum=0.9, selection=s) for s in (
        training.Selection(last=1, channels="5.body.4.weight:0.25"), training.Selection(last=2),
        training.Selection(last=1)))
    return sparse["param_bytes"], whole["param_bytes"], head["param_bytes"], sparse["arena_bytes"]


def lenet_fused():
    model = _suite_model("lenet5", 1)
    return tuple(_arena(model, "cross_entropy", fuse=f)["arena_bytes"] for f in (True, False))


def _digits_manifest() -> codegen.manifest.Manifest:
    out = _workdir() / "digits16"
    if not out.exists():
        codegen.generate(DIGITS / "mlp.onnx", out, loss="cross_entropy", lr=0.05, momentum=0.9, batch=16)
    return codegen.manifest.read(out)


def federated_sizes():
    m = _digits_manifest()
    sizes = blob.sizes(m)
    return m.memory["round_start_bytes"], sizes[blob.DELTA_I8], sizes[blob.DELTA_F32], sizes[blob.PARAMS]


def too_big():
    """The fit check's message for a 256-128-10 MLP on the Cortex-M3 (64 KiB RAM)."""
    rng = np.random.default_rng(0)
    sizes = [256, 128, 10]
    nodes, inits, x = [], {}, "x"
    for k, (a, b) in enumerate(zip(sizes, sizes[1:])):
        inits[f"W{k}"], inits[f"b{k}"] = rng.normal(size=(b, a)) * 0.05, np.zeros(b)
        nodes.append(helper.make_node("Gemm", [x, f"W{k}", f"b{k}"], [f"h{k}"], transB=1))
        x = f"h{k}"
        if k < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [x], [f"r{k}"]))
            x = f"r{k}"
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 256])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [16, 10])],
                              [numpy_helper.from_array(v.astype(np.float32), n) for n, v in inits.items()])
    path = _workdir() / "big.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())
    codegen.generate(path, _workdir() / "big", loss="cross_entropy", lr=0.05)
    try:
        firmware.build(_workdir() / "big", "cortex-m3", np.zeros((16, 256), np.float32), np.zeros(16, np.int64))
    except FitError as e:
        return tuple(int(n.replace(",", "")) for n in re.findall(r"([\d,]+) B", str(e)))
    raise AssertionError("the 256-128-10 MLP unexpectedly fits the Cortex-M3")


@cache
def digits_on_boards():
    """(instructions per step on cortex-m4f, cortex-m3, rv32imafc; static RAM and flash on cortex-m4f,
    the flash taken by the data set): the README's run of 512 digits, 3 epochs."""
    data = np.load(DIGITS / "digits.npz")
    _digits_manifest()
    folder = _workdir() / "digits16"
    counts = []
    for target in ("cortex-m4f", "cortex-m3", "rv32imafc"):
        info = firmware.build(folder, target, data["x"], data["y"], epochs=3, samples=512)
        run = qemu.run(folder, target, timeout=600)
        assert run.code == 0 and run.work, run.output[-2000:]
        counts.append(round(run.work.per_step))
        if target == "cortex-m4f":
            size = info["size"]
            ram, flash = size["ram"], size["flash"]
            dataset = sum(p["bytes"] for p in size["parts"] if p["symbol"].startswith("mt_data"))
    return (*counts, ram, flash, dataset)


@cache
def _int8_fit() -> dict[str, dict[str, dict]]:
    folder = _workdir() / "int8_fit"
    folder.mkdir(exist_ok=True)
    return int8_fit.figures(folder)


def _int8_mobilenet() -> Path:
    """The int8 MobileNetV2 that _int8_fit quantized (int8_fit.Model.quantize)."""
    _int8_fit()
    return _workdir() / "int8_fit" / f"{int8_fit.MODELS[0].name}_int8.onnx"


def int8_fit_table():
    """Arena, parameters + state, their sum and the frozen weights of each int8_fit row."""
    return tuple(n for kinds in _int8_fit().values() for m in kinds.values()
                 for n in (m["arena_bytes"], m["param_bytes"] + m["optimizer_state_bytes"], int8_fit.ram(m),
                           m["frozen_bytes"]))


def int8_fit_board():
    """The int8 MobileNetV2 on nrf52840: RAM, flash,
    instructions of its training step under QEMU."""
    _int8_fit()
    model = int8_fit.MODELS[0]
    size, run = int8_fit.run_on_board(_workdir() / "int8_fit" / f"{model.name}_int8", model.sample)
    assert run.code == 0 and run.work, run.output[-2000:]
    return size["ram"], size["flash"], round(run.work.per_step)


def int8_update():
    """TTE's kind of sparse update of the int8 MobileNetV2 (head, last 4 biases, 25% of the last
    pointwise conv; batch 1, plain SGD), --update float then int8: arena, parameters, RAM."""
    path = _int8_mobilenet()
    weight = list(channels.weights(loader.load(path, 1)))[-2]
    rows = []
    for update in ("float", "int8"):
        selection = training.Selection(last=1, bias_last=4, channels=f"{weight}:0.25")
        _, tg, plan = api.compile_plan(path, api.Spec("cross_entropy", training.Optimizer(), selection, 1,
                                                      update=update))
        memory = api._summary(tg, plan, "m", str(path))["memory"]
        rows += [memory["arena_bytes"], memory["param_bytes"], int8_fit.ram(memory)]
    return tuple(rows)


def auto_sparse():
    """The best sparse update scheme of the int8 MobileNetV2 within 256 KiB by the heuristics
    (inspect --ram-budget; batch 1, plain SGD, no federated copy): K, the fraction of its one
    weight in percent, RAM."""
    path = _int8_mobilenet()
    best = api._schemes(path, api.Spec("cross_entropy", training.Optimizer(), training.Selection(), 1), False,
                        256 * 1024)[0]
    k, fraction = re.fullmatch(r"--train-last 1 --train-bias-last (\d+) --train-channels \S+:([\d.]+)",
                               best.options).groups()
    return int(k), round(float(fraction) * 100), best.ram_bytes


INT8_ROWS = " ".join(rf"\| {model} \| {kind} \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \|"
                     for model in (r"MobileNetV2-0\.35, 96x96x3", r"DS-CNN, 49x10") for kind in ("float32", "int8"))

def int8_per_mac():
    """Instructions per MAC of the int8 convolutions (benchmarks/int8_kernels.py), two decimals."""
    return tuple(round(insns / macs, 2) for _, macs, insns in int8_kernels.measure("cortex-m4f"))


@cache
def _mcu_speed_dir() -> Path:
    folder = _workdir() / "mcu_speed"
    folder.mkdir(exist_ok=True)
    return folder


def mcu_speed_cells():
    """Issue 19's cells (benchmarks/mcu_speed.py): instructions per step and per FLOP, trainer code."""
    return mcu_speed.figures(_mcu_speed_dir())


SUITE_ON_BOARDS = [("mlp", 1), ("mlp", 32), ("cnn1d", 1)]  # the suite cells that fit cortex-m4f and rv32imafc


def mcu_suite_cells():
    """The README's microcontroller table of `benchmarks/run.py` (its deterministic columns):
    instructions per step and per FLOP, RAM, stack and trainer code per suite cell that fits."""
    cells = []
    for name, batch in SUITE_ON_BOARDS:
        for target in MCU_TARGETS:
            fl, r = mcu_speed.cell(_mcu_speed_dir(), name, target, batch)
            cells += [round(r.insns_per_step), round(r.insns_per_step / fl, 2), r.ram, r.stack, r.code]
    return tuple(cells)


MCU_SUITE_ROWS = r"[\s\S]*?".join(rf"\| {name} \| {batch} \| {target} \| ([\d,]+) \| ([\d.]+) \| ([\d,]+) B \(stack (\d+) B\) "
                          rf"\| ([\d,]+) B \|" for name, batch in SUITE_ON_BOARDS for target in MCU_TARGETS)
MCU_SPEED_ROWS = " ".join(rf"\| {model} \| {target} \|(?: [\d,]+ \|){{7}} ([\d,]+) \| ([\d.]+) \| ([\d,]+) B \|"
                          for model, target in mcu_speed.CELLS)

FIGURES = [
    Figure("digits MLP arena (batch 1, naive KB, accumulated batch 32)",
           r"trains at batch 1 in a\s+([\d,]+)-byte arena \(([\d,]+) KB without reuse\), and at batch 32\s+"
           r"\(`--batch 1 --accumulate 32`\) in a ([\d,]+)-byte one", mlp_arena),
    Figure("MobileNet-style arenas (full, bias-only, last layer)",
           r"arena ([\d,]+) B for full training,\s+([\d,]+) B bias-only, ([\d,]+) B last\s+layer only",
           mobilenet_choices),
    Figure("MobileNet-style channel-sparse update (params: 25% of the last conv, whole conv, head; arena)",
           r"pointwise conv's channels \(`--train-last 1 --train-channels \"5\.body\.4\.weight:0\.25\"`\) take "
           r"([\d,]+) B of parameters \(and as much momentum\), against ([\d,]+) B with that whole conv and "
           r"([\d,]+) B for the head alone; the arena stays ([\d,]+) B", mobilenet_channels),
    Figure("LeNet-5 plain SGD arenas (fused, unfused)", r"LeNet-5 with plain SGD: ([\d,]+) B fused, ([\d,]+) B unfused",
           lenet_fused),
    Figure("federated sizes (round-start copy, int8 delta, float delta, blob)",
           r"parameter-sized RAM buffer \(([\d,]+) B for[\s\S]*?sends ([\d,]+) B per round with int8 deltas "
           r"\(([\d,]+) B as float32; the global blob is ([\d,]+) B\)", federated_sizes),
    Figure("cortex-m3 fit error", r"needs at least ([\d,]+) B \(arena ([\d,]+) B \+ parameters\s+([\d,]+) B "
           r"\+ federated round-start copy ([\d,]+) B \+ stack reserve ([\d,]+) B\) but the target has\s+"
           r"([\d,]+) B", too_big, boards=True),
    Figure("digits on boards (instructions m4f, m3, rv32imafc; RAM, flash, data set)",
           r"per training step ([\d,]+) \(cortex-m4f\), ([\d,]+) \(cortex-m3, soft float\), ([\d,]+) "
           r"\(rv32imafc\);\s+static RAM ([\d,]+) B on Cortex-M4F[\s\S]*?flash ([\d,]+) B of which ([\d,]+) B is",
           digits_on_boards, boards=True),
    Figure("int8 fit (arena, params + state, RAM, frozen weights: MobileNetV2 float/int8, DS-CNN float/int8)",
           INT8_ROWS, int8_fit_table),
    Figure("int8 weight training (MobileNetV2 sparse scheme: arena, params, RAM; --update float, int8)",
           r"takes arena ([\d,]+) B \+ parameters ([\d,]+) B = ([\d,]+) B with `--update float` and ([\d,]+) B \+ "
           r"([\d,]+) B = ([\d,]+) B with `--update int8`", int8_update),
    Figure("budgeted sparse update of the int8 MobileNetV2 within 256 KiB (K, percent of a weight, RAM)",
           r"the heuristics pick the classifier, the biases of the last ([\d,]+) layers and ([\d,]+)% of\s+the "
           r"channels of the last block's expand conv: ([\d,]+) B", auto_sparse),
    Figure("int8 convolutions on cortex-m4f (instructions per MAC: pointwise, depthwise)",
           r"take ([\d.]+) instructions per multiply-accumulate for a pointwise 1x1 layer \(64 to 64 channels at "
           r"24x24\) and ([\d.]+) for a depthwise 3x3 one", int8_per_mac, boards=True),
    Figure("int8 MobileNetV2 on nrf52840 (RAM, flash, instructions per step)",
           r"it takes RAM ([\d,]+) B and flash ([\d,]+) B, and a training step runs under QEMU \(([\d,]+) "
           r"instructions", int8_fit_board, boards=True),
    Figure("microcontroller speed cells (instructions per step and per FLOP, trainer code)", MCU_SPEED_ROWS,
           mcu_speed_cells, boards=True),
    Figure("microcontroller suite table (instructions per step and per FLOP, RAM, stack, trainer code)",
           MCU_SUITE_ROWS, mcu_suite_cells, boards=True),
]


def boards_available() -> bool:
    return all(shutil.which(t) for t in ("arm-none-eabi-gcc", "qemu-system-arm", "riscv64-unknown-elf-gcc",
                                         "qemu-system-riscv32", "cc"))


def compute(boards: bool) -> dict[str, list[str]]:
    """Every figure's current values as the README writes them (two decimals for fractions)."""
    return {fig.what: [f"{n:,.2f}" if isinstance(n, float) else f"{n:,}" for n in fig.compute()]
            for fig in FIGURES if boards or not fig.boards}


def stale(text: str, boards: bool, now: dict[str, list[str]] | None = None) -> tuple[str, list[str]]:
    """(README text with the current figures, one line per figure that differed or is missing);
    `now`: the figures compute(boards) gave, when already computed."""
    now = compute(boards) if now is None else now
    problems = []
    for fig in FIGURES:
        if fig.what not in now:
            continue
        match = re.search(fig.pattern.replace(" ", r"\s+"), text)  # the prose may wrap anywhere
        if not match:
            problems.append(f"{fig.what}: the sentence is missing (pattern {fig.pattern!r})")
            continue
        values = now[fig.what]
        assert len(values) == len(match.groups()), f"{fig.what}: {len(values)} figures for {len(match.groups())} places"
        if list(match.groups()) != values:
            problems.append(f"{fig.what}: README says {', '.join(match.groups())}; now {', '.join(values)}")
            spans = [match.span(g) for g in range(1, len(values) + 1)]
            for (start, end), value in reversed(list(zip(spans, values))):
                text = text[:start] + value + text[end:]
    return text, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite README.md with the current figures")
    args = parser.parse_args()
    boards = boards_available()
    now = compute(boards)  # minutes: README is read after, so edits made meanwhile stay
    text, problems = stale(README.read_text(), boards, now)
    for p in problems:
        print(p)
    if args.write and problems:
        README.write_text(text)
        print(f"updated {len(problems)} figure(s) in {README}")
        return 0
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
