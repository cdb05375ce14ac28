"""`mcutrain build`: the generated trainer + a harness with an embedded data set, cross-compiled
for one target into a firmware ELF (BUILD_DIR/<target>/firmware.elf). Two harnesses: `train`
(harness.c.j2) trains and reports over stdout; `federated` (harness_federated.c.j2) is a client
of federated rounds over the board's UART (board_link.py is the other end). It refuses, before
compiling, a model or data set that cannot fit the target's RAM/flash, and checks the linked
image again. Also parses the train harness's output, whose format harness.c.j2 defines."""
from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import blob, elfsize, targets
from .manifest import Manifest, read as read_manifest
from .build import C_FLAGS
from .ctext import ENV
from .errors import BuildError, DataError, FitError, OptionError
from .files import write_atomic

FIRMWARE = "firmware.elf"
HARNESSES = {"train": "harness.c.j2", "federated": "harness_federated.c.j2"}
INFO = "firmware.json"
WARNINGS = ["-Wall", "-Wextra"]


def out_dir(build_dir: Path, target: targets.Target) -> Path:
    return Path(build_dir) / target.name


def _c_float(v) -> str:
    """Shortest text that reads back as exactly this float32 (the exponent makes it a float literal)."""
    return np.format_float_scientific(np.float32(v), unique=True, trim="-") + "f"


def prepare_data(m: Manifest, x: np.ndarray, y: np.ndarray, samples: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Whole batches of (x, y) as the harness embeds them: float32 samples, labels of the C type."""
    if len(m.inputs) != 1:
        raise OptionError(f"the firmware harness feeds one input; '{m.name}' takes {len(m.inputs)}")
    batch, sample = m.batch, m.inputs[0].shape[1:]
    label_shape = tuple(m.labels.shape[1:])
    n = min(len(x), samples or len(x))
    n -= n % batch
    if len(x) != len(y) or n < batch:
        raise DataError(f"need at least one batch ({batch}) of matching x/y samples, got {len(x)} x, {len(y)} y")
    x, y = np.asarray(x[:n]), np.asarray(y[:n])
    if x.shape[1:] != sample or not np.all(np.isfinite(x)):
        raise DataError(f"samples in x must be finite with shape {sample}, got {x.shape[1:]}")
    if m.labels.dtype == "int32":
        classes = m.classes
        if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= classes:
            raise DataError(f"{m.loss} labels must be integers in [0, {classes})")
        return x.astype(np.float32), y.astype(np.int32).reshape(n, *label_shape)
    if y.size != n * int(np.prod(label_shape)):
        raise DataError(f"labels must have shape {label_shape} per sample, got {y.shape[1:]}")
    return x.astype(np.float32), y.astype(np.float32).reshape(n, *label_shape)


def _rows(a: np.ndarray, fmt) -> list[list[str]]:
    """One line of C initialisers per sample."""
    return [[fmt(v) for v in row] for row in a.reshape(len(a), -1)]


def render_harness(m: Manifest, target: str, x: np.ndarray, y: np.ndarray, epochs: int,
                   harness: str = "train") -> str:
    return ENV.get_template(HARNESSES[harness]).render(
        prefix=m.name, PREFIX=m.name.upper(), target=target, samples=len(x), epochs=epochs,
        loss=m.loss, classes=m.classes or 0,
        x_size=int(np.prod(m.inputs[0].shape)), x=_rows(x, _c_float),
        y=_rows(y, str if y.dtype == np.int32 else _c_float))


def check_harness(m: Manifest, target: targets.Target, harness: str) -> None:
    """The federated harness needs the round-start copy (a --federated build) and a UART."""
    if harness not in HARNESSES:
        raise OptionError(f"--harness must be one of {', '.join(HARNESSES)}, got '{harness}'")
    if harness != "federated":
        return
    if not m.federated:
        raise OptionError(f"--harness federated needs a build made with --federated: '{m.name}' was generated "
                          "with --no-federated (no round-start copy, no delta); run `mcutrain generate` again "
                          "without --no-federated")
    if target.uart is None:
        known = ", ".join(n for n in targets.names() if targets.load(n).uart)
        raise OptionError(f"target '{target.name}' has no [uart] section (a serial driver and its address) for "
                          f"--harness federated; targets with one: {known}")


def check_fit(m: Manifest, target: targets.Target, x: np.ndarray, y: np.ndarray, harness: str = "train") -> None:
    """Refuse before compiling what the target's memory cannot hold (the linker checks the rest)."""
    mem = target.memory
    if mem is None:
        return
    b = m.memory
    message = max(blob.sizes(m).values()) if harness == "federated" else 0
    ram = {"arena": b["arena_bytes"], "parameters": b["param_bytes"],
           "optimizer state": b["optimizer_state_bytes"],
           "federated round-start copy": b.get("round_start_bytes", 0), "serial message buffer": message,
           "stack reserve": mem.stack}
    flash = {"data set": x.nbytes + y.nbytes, "initial parameters": b["param_bytes"],
             "round-start initial values": b.get("round_start_bytes", 0),
             "frozen parameters": b["frozen_bytes"], "constants": b["const_bytes"]}
    for region, parts, size in (("RAM", ram, mem.ram), ("flash", flash, mem.flash)):
        need = sum(parts.values())
        if need > size:
            detail = " + ".join(f"{k} {v:,} B" for k, v in parts.items() if v)
            raise FitError(f"'{m.name}' does not fit the {region} of target '{target.name}': needs at "
                           f"least {need:,} B ({detail}) but the target has {size:,} B; use a smaller "
                           "model/batch or fewer samples (--samples), or a bigger target")


def _compile_cmd(m: Manifest, target: targets.Target, folder: Path, harness: Path, elf: Path,
                 uart: bool) -> list[str]:
    cmd = [target.cc, *C_FLAGS, *WARNINGS, *target.cflags, f"-I{folder}", "-o", str(elf),
           str(harness), str(folder / f"{m.name}.c")]
    if uart:
        cmd[-2:-2] = target.uart.cflags()
        cmd.append(str(target.uart.driver))
    if target.startup:
        cmd.append(str(target.startup))
    if target.linker_script:
        cmd.append(f"-T{target.linker_script}")
    if target.memory:
        cmd += target.memory.defsyms()
    return cmd + target.ldflags


def _link_error(target: targets.Target, stderr: str) -> None:
    over = re.search(r"region [`'](\w+)' overflowed by (\d+) bytes", stderr)
    if over and target.memory:
        region = "RAM" if over.group(1).lower() == "ram" else "flash"
        size = target.memory.ram if region == "RAM" else target.memory.flash
        raise FitError(f"the firmware does not fit the {region} of target '{target.name}': "
                       f"{int(over.group(2)):,} B over its {size:,} B (code + data + stack reserve)")


def build(build_dir: str | Path, target_name: str, x: np.ndarray, y: np.ndarray, epochs: int = 1,
          samples: int | None = None, harness: str = "train") -> dict:
    """Write BUILD_DIR/<target>/{harness.c, firmware.elf, firmware.json}; returns firmware.json."""
    if epochs < 1:
        raise OptionError("--epochs must be >= 1")
    folder = Path(build_dir).resolve()
    m = read_manifest(folder)
    target = targets.load(target_name)
    check_harness(m, target, harness)
    x, y = prepare_data(m, x, y, samples)
    check_fit(m, target, x, y, harness)
    target.require_compiler()
    dest = out_dir(folder, target)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:  # harness and ELF replace the old ones together
        harness_c, elf = Path(tmp) / "harness.c", Path(tmp) / FIRMWARE
        harness_c.write_text(render_harness(m, target.name, x, y, epochs, harness))
        cmd = _compile_cmd(m, target, folder, harness_c, elf, harness == "federated")
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            _link_error(target, done.stderr)
            raise BuildError(f"building the firmware for '{target.name}' failed:\n{' '.join(cmd)}\n"
                             f"{done.stderr.strip()}")
        os.replace(harness_c, dest / "harness.c")
        os.replace(elf, dest / FIRMWARE)
    size = elfsize.measure(dest / FIRMWARE, m.name)
    info = {"target": target.name, "model": m.name, "model_hash": m.model_hash, "harness": harness, "epochs": epochs,
            "samples": len(x), "steps": epochs * (len(x) // m.batch), "elf": FIRMWARE, "size": size.to_json()}
    write_atomic(dest / INFO, json.dumps(info, indent=1))
    return info


def read_info(build_dir: str | Path, target: targets.Target) -> dict:
    path = out_dir(Path(build_dir), target) / INFO
    if not path.is_file():
        raise OptionError(f"no firmware for target '{target.name}' in '{build_dir}': run "
                          f"`mcutrain build {build_dir} --target {target.name} --data ...` first")
    return json.loads(path.read_text())


@dataclass
class Report:
    """What the harness printed: per-epoch mean losses, the final metric, the trained parameters."""
    losses: np.ndarray  # float32, one per epoch
    metric: str
    value: np.float32
    params: np.ndarray  # float32 blob, as get_params returns it
    done: bool


def _f32(hex_word: str) -> np.float32:
    return np.array([int(hex_word, 16)], np.uint32).view(np.float32)[0]


def parse_output(text: str) -> Report:
    losses = [_f32(h) for h in re.findall(r"^epoch \d+ loss 0x([0-9a-f]{8})", text, re.M)]
    metric = re.search(r"^(accuracy|mse) 0x([0-9a-f]{8})", text, re.M)
    words = [w for line in re.findall(r"^param \d+((?: 0x[0-9a-f]{8})+)", text, re.M) for w in line.split()]
    return Report(np.array(losses, np.float32), metric.group(1) if metric else "",
                  _f32(metric.group(2)) if metric else np.float32("nan"),
                  np.array([int(w, 16) for w in words], np.uint32).view(np.float32),
                  bool(re.search(r"^done$", text, re.M)))


def readable(line: str) -> str | None:
    """An output line as the summary shows it (the bit patterns left out), or None for the
    parameter dump."""
    if re.match(r"params? \d", line):
        return None
    return re.sub(r"^(epoch \d+) loss", r"\1: loss", re.sub(r" 0x[0-9a-f]{8}", "", line))


def check_current(build_dir: str | Path, target: targets.Target) -> None:
    """Refuse a firmware built before the folder's last `generate` (the trainable set may differ)."""
    if read_info(build_dir, target).get("model_hash") != read_manifest(build_dir).model_hash:
        raise DataError(f"the firmware for '{target.name}' was built before the last `mcutrain generate` "
                        f"of '{build_dir}': run `mcutrain build` again")


def trained_params(build_dir: str | Path, target_name: str, report: Report) -> dict[str, np.ndarray]:
    """The weights a firmware run printed, by tensor name (`run --save`), if it printed them all."""
    m = read_manifest(build_dir)
    check_current(build_dir, targets.load(target_name))
    expected = sum(p.size for p in m.params)
    if not report.done or report.params.size != expected:
        raise DataError(f"the firmware printed {report.params.size:,} of {expected:,} parameter values")
    return blob.split(report.params, m)
