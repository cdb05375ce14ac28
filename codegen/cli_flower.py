"""`mcutrain flower-app`: thin like cli.py; api.flower_app (codegen/flower_app.py) writes the app."""
from __future__ import annotations

from pathlib import Path

import typer

from typing import Optional

from . import api
from .cli_boards import target_option
from .console import call, note


def _flower_app(build_dir: Path, data: Path, dest: Path, clients: int, board: Optional[str]) -> None:
    out = api.flower_app(build_dir, data, dest, clients, board)
    played = f"; client 0 is the {board} board (files/build/{board}/firmware.elf)" if board else ""
    note(f"wrote the Flower App {out} ({clients} simulated clients{played}); run it with `flwr run {out}`")


def register(app: typer.Typer) -> None:
    @app.command("flower-app")
    def flower_app_cmd(
        build_dir: Path = typer.Argument(..., help="folder written by `mcutrain generate`"),
        data: Path = typer.Option(..., metavar="FILE", help=".npz with arrays x and y, split over the clients"),
        dest: Path = typer.Option(..., "-o", "--out", metavar="DIR", help="Flower App folder to write"),
        clients: int = typer.Option(10, metavar="N", help="simulated clients (each gets at least one full batch)"),
        board: Optional[str] = target_option(None, "build this board's federated firmware (partition 0 embedded): "
                                             "it plays client 0 through a serial gateway, under QEMU or on a device"),
    ):
        """A Flower App (flwr 1.42) that trains this build federated over N simulated clients:
        run it with `flwr run DIR` (needs the `flower` extra of mcutrain)."""
        call(_flower_app, build_dir, data, dest, clients, board)
