"""`mcutrain build | run | size`: firmware and drop-in libraries for the boards in targets/.
Thin like cli.py: parse options, call firmware/library/qemu/elfsize, print; errors exit 2."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from . import elfsize, firmware, library, qemu, targets
from .manifest import read as read_manifest
from .cli import _kib, _load_data, _run, out
from .errors import OptionError

say = partial(out.print, soft_wrap=True, highlight=False)
TARGET_HELP = "board: " + ", ".join(targets.names()) + " (targets/*.toml), or a path to a .toml"


def _build(build_dir: Path, target: str, data: Optional[Path], epochs: int, samples: Optional[int],
           as_library: bool, dest: Optional[Path]) -> None:
    if as_library:
        path = library.build_library(build_dir, target, dest)
        say(f"wrote the library {path} (CMakeLists.txt, library.json, src/)")
        return
    if data is None:
        raise OptionError("--data is required to build firmware (or use --library)")
    x, y = _load_data(data)
    info = firmware.build(build_dir, target, x, y, epochs, samples)
    s = info["size"]
    say(f"wrote {build_dir}/{info['target']}/{info['elf']}: {info['samples']} samples, "
              f"{info['epochs']} epoch(s), {info['steps']} steps; flash {_kib(s['flash'])}, RAM {_kib(s['ram'])}")


def _run_firmware(build_dir: Path, target: str, timeout: float) -> int:
    result = qemu.run(build_dir, target, timeout, echo=lambda line: print(line, flush=True))
    say(f"work: {result.work}" if result.work else result.note)
    if result.code:
        say(f"[red]firmware exited with code {result.code}[/]"
                  + (" (fault)" if result.code == 127 else ""))
    return result.code


def _size(build_dir: Path, target_name: str) -> None:
    target = targets.load(target_name)
    info = firmware.read_info(build_dir, target)
    size = elfsize.measure(firmware.out_dir(build_dir, target) / info["elf"], read_manifest(build_dir).name)
    say(f"{info['elf']} for {target.name}: text {size.text:,}  data {size.data:,}  bss {size.bss:,} (bytes)")
    mem = target.memory
    for region, used, limit in (("RAM", size.ram, mem and mem.ram), ("flash", size.flash, mem and mem.flash)):
        table = Table(title=f"{region}: {_kib(used)}" + (f" of {_kib(limit)}" if limit else ""), show_header=False)
        for part in size.parts:
            if part.region == region:
                table.add_row(part.what, part.symbol, _kib(part.bytes))
        named = sum(p.bytes for p in size.parts if p.region == region)
        table.add_row("other (code, C library, harness)" if region == "flash" else "other (C library, harness)",
                      "", _kib(used - named))
        out.print(table)
    if any(p.symbol.endswith("_params") for p in size.parts):
        say("(initial parameter values are also stored in flash, inside 'data')")


def register(app: typer.Typer) -> None:
    @app.command()
    def build(
        build_dir: Path = typer.Argument(..., help="folder written by `mcutrain generate`"),
        target: str = typer.Option(..., help=TARGET_HELP),
        data: Optional[Path] = typer.Option(None, help=".npz with x and y, embedded in the firmware"),
        epochs: int = typer.Option(1, min=1, help="training epochs the firmware runs"),
        samples: Optional[int] = typer.Option(None, min=1, help="embed only the first N samples"),
        as_library: bool = typer.Option(False, "--library", help="emit a drop-in library instead of firmware"),
        dest: Optional[Path] = typer.Option(None, "-o", "--out", help="library folder (with --library)"),
    ):
        """Cross-compile a firmware ELF that trains on an embedded data set, or a drop-in library."""
        _run(_build, build_dir, target, data, epochs, samples, as_library, dest)

    @app.command()
    def run(
        build_dir: Path = typer.Argument(..., help="folder written by `mcutrain generate`"),
        target: str = typer.Option(..., help=TARGET_HELP),
        timeout: float = typer.Option(120.0, help="seconds before the run is killed (exit code 124)"),
    ):
        """Run the built firmware (QEMU, or natively for host); exit with its exit code."""
        code = _run(_run_firmware, build_dir, target, timeout)
        raise typer.Exit(code)

    @app.command()
    def size(
        build_dir: Path = typer.Argument(..., help="folder written by `mcutrain generate`"),
        target: str = typer.Option(..., help=TARGET_HELP),
    ):
        """text/data/bss of the firmware, and which part of RAM and flash each buffer takes."""
        _run(_size, build_dir, target)
