"""Where the C runtime and the board files live: inside the installed package (a wheel ships
runtime_c/ and targets/ as package data), or at the top of a source checkout (editable installs)."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def _data(packaged: str, in_checkout: str) -> Path:
    inside = files("codegen") / packaged
    return Path(str(inside)) if inside.is_dir() else _CHECKOUT / in_checkout


def runtime_dir() -> Path:
    """The C runtime: mt_common.h and kernels/ (what generated code includes), boards/ (startup
    code, linker script, the QEMU instruction-counting plugin's source). For your own build
    system: `generate` copies what a trainer needs into its folder, so this is for tooling."""
    return _data("runtime_c", "runtime_c")


def targets_dir() -> Path:
    """The board descriptions (<name>.toml) that `--target NAME` finds."""
    return _data("targets_data", "targets")
