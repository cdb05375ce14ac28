"""`mcutrain build | run | size`: firmware and drop-in libraries for the boards in targets/.
Thin like cli.py: parse options, call firmware/library/qemu/elfsize, print; errors exit 2."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from . import blob, elfsize, firmware, library, qemu, targets
from .console import call, kib, note, out, say, status
from .fit import load_data
from .manifest import read as read_manifest
from .errors import OptionError


def _complete_target(incomplete: str) -> list[str]:
    return [name for name in targets.names() if name.startswith(incomplete)]


def target_option(default=..., help: str = "board"):
    """--target (or --board): a known board (the shell completes the names) or a path to a board .toml."""
    return typer.Option(default, metavar="NAME|FILE.toml", autocompletion=_complete_target,
                        help=f"{help}: " + ", ".join(targets.names()) + " (targets/*.toml), or a path to a .toml")


def _build(build_dir: Path, target: str, data: Optional[Path], epochs: int, samples: Optional[int],
           as_library: bool, dest: Optional[Path], harness: str) -> None:
    if as_library:
        path = library.build_library(build_dir, target, dest)
        note(f"wrote the library {path} (CMakeLists.txt, library.json, src/)")
        return
    if data is None:
        raise OptionError("--data is required to build firmware (or use --library)")
    x, y = load_data(data)
    with status(f"building the firmware for {target}"):
        info = firmware.build(build_dir, target, x, y, epochs, samples, harness)
    s = info["size"]
    rounds = " per federated round (serial line: UART)" if harness == "federated" else ""
    say(f"wrote {build_dir}/{info['target']}/{info['elf']}: {info['samples']} samples, "
        f"{info['epochs']} epoch(s), {info['steps']} steps{rounds}; flash {kib(s['flash'])}, RAM {kib(s['ram'])}")


def _echo(verbose: bool):
    """Firmware output as it comes: the epoch losses and final metric; the parameter dump too
    when verbose. Plain print: the firmware's text is not rich markup."""
    def echo(line: str) -> None:
        shown = line if verbose else firmware.readable(line)
        if shown is not None:
            print(shown, flush=True)
    return echo


def _run_firmware(build_dir: Path, target: str, timeout: float, verbose: bool, save: Optional[Path]) -> int:
    if save:  # before the run: a stale firmware would train for nothing
        firmware.check_current(build_dir, targets.load(target))
    with status(f"running the firmware for {target}"):
        result = qemu.run(build_dir, target, timeout, echo=_echo(verbose))
    if result.work:
        say(f"work: {result.work}")
    else:
        note(result.note)
    if result.code:
        say(f"[red]firmware exited with code {result.code}[/]" + (" (fault)" if result.code == 127 else "")
            + ("; nothing saved" if save else ""))
    elif save:
        _save(build_dir, target, result, save)
    return result.code


def _save(build_dir: Path, target: str, result: qemu.RunResult, dest: Path) -> None:
    params = firmware.trained_params(build_dir, target, firmware.parse_output(result.output))
    blob.write_params(dest, params, read_manifest(build_dir))
    note(f"saved the device-trained parameters to {dest}")


def _size(build_dir: Path, target_name: str) -> None:
    target = targets.load(target_name)
    info = firmware.read_info(build_dir, target)
    size = elfsize.measure(firmware.out_dir(build_dir, target) / info["elf"], read_manifest(build_dir).name)
    say(f"{info['elf']} for {target.name}: text {size.text:,}  data {size.data:,}  bss {size.bss:,} (bytes)")
    mem = target.memory
    for region, used, limit in (("RAM", size.ram, mem and mem.ram), ("flash", size.flash, mem and mem.flash)):
        table = Table(title=f"{region}: {kib(used)}" + (f" of {kib(limit)}" if limit else ""), show_header=False)
        for part in size.parts:
            if part.region == region:
                table.add_row(part.what, part.symbol, kib(part.bytes))
        named = sum(p.bytes for p in size.parts if p.region == region)
        table.add_row("other (code, C library, harness)" if region == "flash" else "other (C library, harness)",
                      "", kib(used - named))
        out.print(table)
    if any(p.symbol.endswith("_params") for p in size.parts):
        say("(initial parameter values are also stored in flash, inside 'data')")


def register(app: typer.Typer) -> None:
    @app.command()
    def build(
        build_dir: Path = typer.Argument(..., help="folder written by `mcutrain generate`"),
        target: str = target_option(),
        data: Optional[Path] = typer.Option(None, metavar="FILE", help=".npz with x and y, embedded in the firmware"),
        epochs: int = typer.Option(1, min=1, metavar="N", help="training epochs the firmware runs"),
        samples: Optional[int] = typer.Option(None, min=1, metavar="N", help="embed only the first N samples"),
        harness: str = typer.Option("train", metavar="train|federated",
                                    help="train: train and report over stdout; federated: a client of federated "
                                    "rounds over the board's UART (docs/flower.md)"),
        as_library: bool = typer.Option(False, "--library", help="emit a drop-in library instead of firmware"),
        dest: Optional[Path] = typer.Option(None, "-o", "--out", metavar="DIR",
                                            help="library folder (with --library)"),
    ):
        """Cross-compile a firmware ELF that trains on an embedded data set, or a drop-in library."""
        call(_build, build_dir, target, data, epochs, samples, as_library, dest, harness)

    @app.command()
    def run(
        build_dir: Path = typer.Argument(..., help="folder written by `mcutrain generate`"),
        target: str = target_option(),
        timeout: float = typer.Option(120.0, metavar="SECONDS", help="the run is killed after this (exit code 124)"),
        verbose: bool = typer.Option(False, "-v", "--verbose", help="also print the trained parameters' bits"),
        save: Optional[Path] = typer.Option(None, metavar="FILE", help="write the device-trained parameters: .npz of "
                                            "name -> array, any other name a parameter blob"),
    ):
        """Run the built firmware (QEMU, or natively for host): per-epoch loss, final metric; exit
        with its exit code."""
        code = call(_run_firmware, build_dir, target, timeout, verbose, save)
        raise typer.Exit(code)

    @app.command()
    def size(
        build_dir: Path = typer.Argument(..., help="folder written by `mcutrain generate`"),
        target: str = target_option(),
    ):
        """text/data/bss of the firmware, and which part of RAM and flash each buffer takes."""
        call(_size, build_dir, target)
