"""`mcutrain flower-app`: thin like cli.py; api.flower_app (codegen/flower_app.py) writes the app."""
from __future__ import annotations

from pathlib import Path

import typer

from . import api
from .console import call, note


def _flower_app(build_dir: Path, data: Path, dest: Path, clients: int) -> None:
    out = api.flower_app(build_dir, data, dest, clients)
    note(f"wrote the Flower App {out} ({clients} simulated clients); run it with `flwr run {out}`")


def register(app: typer.Typer) -> None:
    @app.command("flower-app")
    def flower_app_cmd(
        build_dir: Path = typer.Argument(..., help="folder written by `mcutrain generate`"),
        data: Path = typer.Option(..., metavar="FILE", help=".npz with arrays x and y, split over the clients"),
        dest: Path = typer.Option(..., "-o", "--out", metavar="DIR", help="Flower App folder to write"),
        clients: int = typer.Option(10, metavar="N", help="simulated clients (each gets at least one full batch)"),
    ):
        """A Flower App (flwr 1.42) that trains this build federated over N simulated clients:
        run it with `flwr run DIR` (needs the `flower` extra of mcutrain)."""
        call(_flower_app, build_dir, data, dest, clients)
