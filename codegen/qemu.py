"""`mcutrain run`: run a built firmware under QEMU (or natively for the host target), always with
a timeout, streaming its output. A fault exits non-zero (startup/crt0 turn traps into exit
codes) and a hang is killed at the timeout, so a caller never waits forever. Under QEMU a TCG
plugin counts guest instructions per training step: a deterministic work figure."""
from __future__ import annotations

import ctypes
import hashlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import elfsize, firmware, targets
from .build import cache_dir
from .errors import OptionError
from .paths import runtime_dir

TIMEOUT_EXIT = 124  # like coreutils `timeout`
PLUGIN_SOURCE = runtime_dir() / "boards" / "insncount.c"


@dataclass
class Work:
    """Instructions summed over the bracketed training steps, and over the whole run."""
    region: int
    steps: int
    total: int

    @property
    def per_step(self) -> float:
        return self.region / self.steps if self.steps else float("nan")

    def __str__(self) -> str:
        return (f"{self.per_step:,.0f} instructions/training step ({self.region:,} over {self.steps} "
                f"steps; {self.total:,} in the whole run)")


@dataclass
class RunResult:
    code: int
    output: str
    timed_out: bool
    work: Work | None
    note: str = ""  # why there is no work figure


def _plugin(qemu_binary: str) -> tuple[Path | None, str]:
    """The instruction-count plugin, compiled once per source (cached); or why it is unavailable."""
    version = subprocess.run([qemu_binary, "--version"], capture_output=True, text=True).stdout
    if not re.search(r"version 7\.", version):
        return None, "no work figure: the instruction-count plugin targets QEMU 7.x's plugin API"
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None, "no work figure: no host C compiler to build the QEMU plugin (apt-get install gcc)"
    source = PLUGIN_SOURCE.read_bytes()
    lib = cache_dir() / f"insncount-{hashlib.sha256(source).hexdigest()[:16]}.so"
    if not lib.is_file():
        lib.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
            built = Path(tmp) / lib.name
            done = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(built), str(PLUGIN_SOURCE)],
                                  capture_output=True, text=True)
            if done.returncode:
                return None, f"no work figure: building the QEMU plugin failed: {done.stderr.strip()}"
            built.replace(lib)
    return lib, ""


def command(target: targets.Target, elf: Path, plugin_args: str = "", serial: Path | None = None) -> list[str]:
    """The emulator's command line; `serial`: a listening unix socket the board's first UART
    connects to (the federated harness's line)."""
    if target.qemu is None:
        return [str(elf)]
    q = target.qemu
    cmd = [q.binary, "-M", q.machine, *q.options, "-display", "none", "-chardev", "stdio,id=sh",
           "-semihosting-config", "enable=on,target=native,chardev=sh", "-kernel", str(elf)]
    if serial is not None:
        cmd += ["-serial", f"unix:{serial}"]
    return cmd + (["-plugin", plugin_args] if plugin_args else [])


def _die_with_parent() -> None:
    """In the child, before exec (Linux): SIGKILL when the thread that started it ends. A Flower
    worker that is killed (Ray ends its actors so) cannot stop its board, whose firmware would
    otherwise wait on its UART forever."""
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start(build_dir: str | Path, target: targets.Target, serial: Path, output) -> subprocess.Popen:
    """The federated firmware under QEMU in the background, its UART on the unix socket `serial`
    (listening already: QEMU connects as it starts) and its stdout/stderr to the file `output`."""
    elf = firmware.out_dir(Path(build_dir), target) / firmware.read_info(build_dir, target)["elf"]
    target.require_emulator()
    if target.qemu is None:
        raise OptionError(f"target '{target.name}' runs natively: no emulated UART for the federated harness")
    return subprocess.Popen(command(target, elf, serial=serial), stdin=subprocess.DEVNULL, stdout=output,
                            stderr=subprocess.STDOUT,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)


def _stream(cmd: list[str], timeout: float, echo: Callable[[str], None]) -> tuple[int, str, bool]:
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace")
    expired = threading.Event()

    def expire():
        expired.set()
        proc.kill()

    timer = threading.Timer(timeout, expire)
    timer.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            echo(line.rstrip("\n"))
        code = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:  # echo failed: do not leave the emulator running
            proc.kill()
            proc.wait()
    return (TIMEOUT_EXIT if expired.is_set() else code), "".join(lines), expired.is_set()


def run(build_dir: str | Path, target_name: str, timeout: float = 60.0,
        echo: Callable[[str], None] = lambda line: None) -> RunResult:
    target = targets.load(target_name)
    info = firmware.read_info(build_dir, target)
    if info.get("harness") == "federated":
        raise OptionError(f"the firmware for '{target.name}' is a federated client (build --harness federated): it "
                          "waits on its UART for a global model; a Flower App runs it (mcutrain flower-app --board)")
    elf = firmware.out_dir(Path(build_dir), target) / info["elf"]
    target.require_emulator()
    plugin, note = (None, "no work figure on the host target (no emulator)")
    if target.qemu:
        plugin, note = _plugin(target.qemu.binary)
    with tempfile.TemporaryDirectory() as tmp:
        counts = Path(tmp) / "insns.txt"
        args = ""
        if plugin:
            begin, end = (elfsize.symbol_address(elf, s) for s in ("mt_work_begin", "mt_work_end"))
            args = f"{plugin},start={begin:#x},stop={end:#x},outfile={counts}"
        code, output, timed_out = _stream(command(target, elf, args), timeout, echo)
        work = _read_counts(counts) if counts.is_file() else None
    if timed_out:
        echo(f"timed out after {timeout:g} s: killed (exit code {TIMEOUT_EXIT})")
    return RunResult(code, output, timed_out, work, note if work is None else "")


def _read_counts(path: Path) -> Work:
    values = dict(re.findall(r"^(\w+)=(\d+)", path.read_text(), re.M))
    return Work(int(values["insns_region"]), int(values["region_pairs"]), int(values["insns_total"]))
