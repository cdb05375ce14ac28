"""Boards as data: one TOML file per target in targets/ (or any .toml path), so adding a board
means adding one file. This module only reads and checks them; building and running live in
firmware.py and qemu.py."""
from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import OptionError, ToolchainError
from .paths import runtime_dir, targets_dir



@dataclass(frozen=True)
class Memory:
    flash_origin: int
    flash: int
    ram_origin: int
    ram: int
    stack: int  # stack (+ libc heap) reserve at the top of RAM

    def defsyms(self) -> list[str]:
        """The memory map for the linker scripts (ours and picolibc's use the same names)."""
        syms = {"__flash": self.flash_origin, "__flash_size": self.flash, "__ram": self.ram_origin,
                "__ram_size": self.ram, "__stack_size": self.stack}
        return ["-Wl," + ",".join(f"--defsym={k}={v:#x}" for k, v in syms.items())]


@dataclass(frozen=True)
class Qemu:
    binary: str
    packages: list[str]
    machine: str
    options: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Uart:
    """The serial line of `build --harness federated`: a polled driver of the board family
    (runtime_c/boards/uart_*.c, implementing mt_uart.h) and where the peripheral is."""
    driver: Path
    base: int
    divider: int  # the driver's clock divider (peripheral clock / baud rate)

    def cflags(self) -> list[str]:
        return [f"-I{self.driver.parent}", f"-DMT_UART_BASE={self.base:#x}u", f"-DMT_UART_DIVIDER={self.divider}u"]


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    cc: str
    packages: list[str]
    cflags: list[str]
    ldflags: list[str]
    probe: str | None = None  # a file of the target's C library, found via `cc -print-file-name`
    startup: Path | None = None
    linker_script: Path | None = None
    memory: Memory | None = None  # None: not checked (host)
    qemu: Qemu | None = None  # None: the firmware runs natively
    uart: Uart | None = None  # None: no federated harness for this target

    def require_compiler(self) -> None:
        _require(self.cc, self.packages)
        if self.probe and not Path(_print_file_name(self.cc, self.probe)).is_absolute():
            raise ToolchainError(f"{self.cc} has no C library for target '{self.name}' ({self.probe} "
                                 f"not found): {_install_hint(self.packages)}")

    def require_emulator(self) -> None:
        if self.qemu:
            _require(self.qemu.binary, self.qemu.packages)


def _print_file_name(cc: str, name: str) -> str:
    return subprocess.run([cc, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()


def _install_hint(packages: list[str]) -> str:
    return f"install the Debian package(s): apt-get install {' '.join(packages)}"


def _require(program: str, packages: list[str]) -> None:
    if not shutil.which(program):
        raise ToolchainError(f"'{program}' not found: {_install_hint(packages)}")


def names() -> list[str]:
    return sorted(p.stem for p in targets_dir().glob("*.toml"))


def load(name: str) -> Target:
    """A target by name (targets/<name>.toml) or by path to a .toml file."""
    path = Path(name) if name.endswith(".toml") else targets_dir() / f"{name}.toml"
    if not path.is_file():
        raise OptionError(f"unknown target '{name}'; known: {', '.join(names())} (or a path to a .toml)")
    try:
        return _parse(path, _read(path))
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as e:
        raise OptionError(f"target file '{path}' is invalid: {type(e).__name__} {e}") from None


def _read(path: Path) -> dict:
    """A board file's tables; `based_on = "<target>"` takes another target's tables and changes
    the keys this file gives (a chip that differs from a core's target in memory sizes only)."""
    data, seen = tomllib.loads(path.read_text()), {path.stem}
    while "based_on" in data:
        base = data.pop("based_on")
        if base in seen or not (targets_dir() / f"{base}.toml").is_file():
            raise KeyError(f"based_on: '{base}' is not a known target (or a cycle)")
        seen.add(base)
        parent = tomllib.loads((targets_dir() / f"{base}.toml").read_text())
        data = {**parent, **{k: {**parent.get(k, {}), **v} if isinstance(v, dict) else v for k, v in data.items()}}
    return data


# Target names become folder names and C/CMake text; compiler names and flags go on command lines
# and into CMake files: one safe character set for all of them.
_WORD = re.compile(r"[A-Za-z0-9_.,=+\-/:@]+")


def _words(path: Path, what: str, words: list[str]) -> list[str]:
    for w in words:
        if not isinstance(w, str) or not _WORD.fullmatch(w):
            raise OptionError(f"target file '{path}': {what} {w!r} has characters other than "
                              "letters, digits and _.,=+-/:@")
    return list(words)


def _parse(path: Path, data: dict) -> Target:
    _words(path, "the target name (file name)", [path.stem])
    tc = data["toolchain"]
    _words(path, "a compiler name or flag", [tc["cc"], *tc.get("cflags", []), *tc.get("ldflags", [])])
    files = {k: _file(path, tc[k]) for k in ("startup", "linker_script") if k in tc}
    mem = Memory(**data["memory"]) if "memory" in data else None
    qemu = Qemu(**data["qemu"]) if "qemu" in data else None
    uart = data.get("uart")
    if uart is not None:
        uart = Uart(_file(path, uart["driver"]), int(uart["base"]), int(uart["divider"]))
    return Target(name=path.stem, description=data.get("description", ""), cc=tc["cc"],
                  packages=list(tc["packages"]), cflags=list(tc.get("cflags", [])),
                  ldflags=list(tc.get("ldflags", [])), probe=tc.get("probe"), memory=mem, qemu=qemu,
                  uart=uart, **files)


def _file(target_file: Path, rel: str) -> Path:
    """Paths in a target file are relative to the folder holding runtime_c/ (installed package or
    source checkout: a board file anywhere can name runtime_c/boards/...), or to the file itself."""
    for base in (runtime_dir().parent, target_file.parent):
        if (base / rel).is_file():
            return base / rel
    raise KeyError(f"'{rel}' not found")
