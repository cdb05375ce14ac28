"""The `mcutrain` command: a thin typer layer over codegen.api. Errors print one line, exit 2."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from . import __version__, api
from .budget import ram_bytes
from .errors import DataError, McutrainError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Compile an ONNX model into static-memory C that trains on a microcontroller.")
out = Console()
err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        out.print(f"mcutrain {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")):
    """Compile an ONNX model into static-memory C that trains on a microcontroller."""


def _run(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except McutrainError as e:
        err.print(Text.assemble(("error:", "bold red"), " ", printable(str(e))), highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def printable(text: str) -> str:
    """Names from a model file are shown as text: no rich markup, no terminal control characters."""
    return "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in text)


def _kib(n: int) -> str:
    return f"{n:,} B ({n / 1024:.1f} KiB)"


def print_memory(summary: dict) -> None:
    mem = summary["memory"]
    table = Table(title="memory", show_header=False)
    table.add_row("arena (activations + gradients, shared)", _kib(mem["arena_bytes"]))
    if "lower_bound_bytes" in mem:
        table.add_row("  lower bound (peak of live bytes)", _kib(mem["lower_bound_bytes"]))
    table.add_row("  without reuse (every buffer separate)", _kib(mem["naive_bytes"]))
    table.add_row("trainable parameters (RAM)", _kib(mem["param_bytes"]))
    table.add_row("optimizer state (RAM)", _kib(mem["optimizer_state_bytes"]))
    if mem.get("round_start_bytes"):
        table.add_row("federated round-start copy (RAM)", _kib(mem["round_start_bytes"]))
    table.add_row("frozen parameters (const, flash)", _kib(mem["frozen_bytes"]))
    table.add_row("other constants (const, flash)", _kib(mem["const_bytes"]))
    out.print(table)


@app.command()
def generate(
    model: Path = typer.Argument(..., help="ONNX model file"),
    out_dir: Path = typer.Option(..., "-o", "--out", help="output folder"),
    loss: str = typer.Option("mse", help="mse | cross_entropy | bce_with_logits"),
    optimizer: str = typer.Option("sgd", help="sgd | adam | adamw (PyTorch semantics)"),
    lr: float = typer.Option(0.01, help="learning rate (settable at run time)"),
    momentum: float = typer.Option(0.0, help="SGD momentum"),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="weight decay (L2; decoupled for adamw)"),
    nesterov: bool = typer.Option(False, help="SGD Nesterov momentum"),
    beta1: float = typer.Option(0.9, help="Adam beta1"),
    beta2: float = typer.Option(0.999, help="Adam beta2"),
    eps: float = typer.Option(1e-8, help="Adam epsilon"),
    train: Optional[list[str]] = typer.Option(None, help="glob: train only matching parameters (repeatable)"),
    freeze: Optional[list[str]] = typer.Option(None, help="glob: freeze matching parameters (repeatable)"),
    train_last: Optional[int] = typer.Option(None, "--train-last", help="train only the last N parameterised layers"),
    train_bias_only: bool = typer.Option(False, "--train-bias-only", help="train only biases"),
    batch: Optional[int] = typer.Option(None, help="pin a dynamic batch dimension"),
    name: Optional[str] = typer.Option(None, help="C prefix (default: from the model file name)"),
    output: Optional[str] = typer.Option(None, help="graph output the loss is attached to"),
    accumulate: int = typer.Option(1, help="micro-batches per step (gradient accumulation): "
                                   "a batch of K x --batch samples in the memory of one micro-batch"),
    fuse_updates: bool = typer.Option(True, "--fuse-updates/--no-fuse-updates",
                                      help="apply plain-SGD updates inside the gradient kernels"),
    ram_budget: Optional[int] = typer.Option(None, "--ram-budget", help="fail unless arena + parameters "
                                             "+ optimizer state fit in this many bytes"),
    federated: bool = typer.Option(True, "--federated/--no-federated",
                                   help="keep round-start weights for federated deltas (parameter-sized RAM)"),
):
    """Write <name>.h/.c (+ runtime), training_model.onnx, memory.json and mcutrain.json."""
    summary = _run(api.generate, model, out_dir, loss=loss, lr=lr, momentum=momentum,
                   weight_decay=weight_decay, nesterov=nesterov, train=train, freeze=freeze,
                   batch=batch, name=name, output=output, optimizer=optimizer, beta1=beta1,
                   beta2=beta2, eps=eps, train_last=train_last, train_bias_only=train_bias_only,
                   accumulate=accumulate, fuse_updates=fuse_updates, ram_budget=ram_budget,
                   federated=federated)
    out.print(f"wrote {out_dir}/{summary['name']}.h, {summary['name']}.c, runtime/, "
              "training_model.onnx, memory.json, mcutrain.json")
    out.print(f"trainable: {', '.join(p['name'] for p in summary['params'])}")
    if summary["frozen"]:
        out.print(f"frozen: {', '.join(summary['frozen'])}")
    print_memory(summary)


@app.command()
def report(
    build_dir: Path = typer.Argument(..., help="folder written by `mcutrain generate`"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    plot: Optional[Path] = typer.Option(None, help="write the live-memory timeline (.png or .svg)"),
):
    """Memory report: arena, lower bound, naive size, parameters, optimizer state, constants."""
    from .report import memory_report, plot_timeline

    info = _run(memory_report, build_dir)
    if plot:
        _run(plot_timeline, info, plot)
    if as_json:
        out.print_json(json.dumps(info))
        return
    print_memory({"memory": info})
    out.print(f"peak at step {info['peak_step']} of {info['steps']}; placement order '{info['placement_order']}'")
    if plot:
        out.print(f"timeline written to {plot}")


def _load_data(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """x and y of an .npz, each checked (name, numeric dtype, declared size) before it is read."""
    from . import npz

    if not path.is_file():
        raise DataError(f"data file '{path}' not found")
    what = "an .npz file with arrays 'x' and 'y'"
    with npz.Archive(path, what) as archive:
        missing = [n for n in ("x", "y") if n not in archive.names]
        if missing:
            raise DataError(f"'{path}' must be {what}; it has no {' or '.join(map(repr, missing))} "
                            f"(it has {sorted(archive.names)})")
        return archive.array("x"), archive.array("y")


def _train(build_dir: Path, data: Path, epochs: int, lr: Optional[float], seed: int, save: Optional[Path]):
    from .build import load_host
    from .fit import evaluate, fit

    x, y = _load_data(data)
    trainer = load_host(build_dir)
    if lr is not None:
        trainer.set_lr(lr)
    before = evaluate(trainer, x, y)
    out.print(f"before training: {before}")
    steps = epochs * (len(x) // trainer.train_batch)
    with Progress(console=out, transient=True) as progress:
        task = progress.add_task("training", total=steps)
        for epoch, result in enumerate(fit(trainer, x, y, epochs, seed, lambda: progress.advance(task)), 1):
            out.print(f"epoch {epoch}/{epochs}: {result}")
    if save:
        from .files import write_atomic
        import io

        buf = io.BytesIO()
        np.savez(buf, **trainer.get_params())
        write_atomic(save, buf.getvalue())
        out.print(f"saved trained parameters to {save}")


@app.command()
def train(
    build_dir: Path = typer.Argument(..., help="folder written by `mcutrain generate`"),
    data: Path = typer.Option(..., help=".npz with arrays x (samples, ...) and y (labels)"),
    epochs: int = typer.Option(1, min=1),
    lr: Optional[float] = typer.Option(None, help="override the generated learning rate"),
    seed: int = typer.Option(0, help="shuffling seed"),
    save: Optional[Path] = typer.Option(None, help="write the trained parameters to this .npz"),
):
    """Train on the host (the generated C via cffi): loss and accuracy per epoch."""
    _run(_train, build_dir, data, epochs, lr, seed, save)


@app.command()
def inspect(
    model: Path = typer.Argument(..., help="ONNX model file"),
    batch: Optional[int] = typer.Option(None, help="pin a dynamic batch dimension"),
    optimizer: str = typer.Option("sgd", help="sgd | adam | adamw: its state is part of the estimate"),
    momentum: float = typer.Option(0.0, help="SGD momentum (needs a state buffer)"),
    train: Optional[list[str]] = typer.Option(None, help="glob: your trainable set (as for generate)"),
    freeze: Optional[list[str]] = typer.Option(None, help="glob: freeze matching parameters"),
    train_last: Optional[int] = typer.Option(None, "--train-last", help="train only the last N parameterised layers"),
    train_bias_only: bool = typer.Option(False, "--train-bias-only", help="train only biases"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
):
    """Ops, shapes, parameters and the memory each trainable set costs, before generating."""
    info = _run(api.inspect, model, batch, optimizer=optimizer, momentum=momentum, train=train, freeze=freeze,
                train_last=train_last, train_bias_only=train_bias_only)
    if as_json:
        out.print_json(json.dumps(info))
        return
    table = Table("op", "node", "output shapes", "supported")
    for n in info["nodes"]:
        shapes = ", ".join(str(tuple(s)) for s in n.get("shapes", []) if s is not None)
        table.add_row(n["op"], n["name"] or n["outputs"][0], shapes, "yes" if n["supported"] else "[red]NO[/]")
    out.print(table)
    if info["unsupported"]:
        out.print(f"[red]unsupported ops: {', '.join(info['unsupported'])}[/]; supported: "
                  f"{', '.join(info['supported_ops'])}")
        raise typer.Exit(2)
    out.print(f"opset {info['opset']}; inputs {info['inputs']}; outputs {info['outputs']}")
    out.print("parameters: " + ", ".join(f"{p['name']} {tuple(p['shape'])}" for p in info["params"]))
    if "note" in info:
        out.print(info["note"])
    if "memory_by_choice" in info:
        print_choices(info)


def print_choices(info: dict) -> None:
    """One row per trainable set: the RAM it needs (arena, parameters, optimizer state)."""
    opt = info["optimizer"]
    momentum = f", momentum {opt['momentum']:g}" if opt["momentum"] else ""
    table = Table("trainable set", "arena", "parameters", "optimizer state", "RAM total",
                  title=f"RAM per trainable set, bytes ({info['loss']} loss, {opt['kind']}{momentum})")
    table.columns[0].no_wrap = True
    for row in info["memory_by_choice"]:
        if "error" in row:
            table.add_row(row["choice"], f"[yellow]{row['error']}[/]")
            continue
        parts = [row[k] for k in ("arena_bytes", "param_bytes", "optimizer_state_bytes")] + [ram_bytes(row)]
        table.add_row(row["choice"], *(f"{n:,}" for n in parts))
    out.print(table)
    for row in info["memory_by_choice"]:
        if "options" in row:
            out.print(f"{row['choice']}: {row['options']}", highlight=False)


from .cli_boards import register as _register_boards  # noqa: E402  (board commands: build/run/size)

_register_boards(app)

from .cli_lifecycle import register as _register_lifecycle  # noqa: E402  (export/delta/aggregate)
_register_lifecycle(app)
