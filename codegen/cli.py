"""The `mcutrain` command: a thin typer layer over codegen.api. Errors print one line, exit 2.
What commands print goes through codegen/console.py; board and lifecycle commands live in
cli_boards.py and cli_lifecycle.py."""
from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from . import __version__, api, blob, console, fit, ops, quantized, training
from .budget import ram_bytes
from .cli_boards import register as register_boards
from .cli_lifecycle import register as register_lifecycle
from .cli_flower import register as register_flower
from .console import call, note, out, print_memory, printable, say
from .inspection import Report


class _PlainHelp:
    """Help shows an option's value by its metavar (default: its name) and a flag by nothing:
    recent typer versions print type placeholders (<bool>, <str>) otherwise. Setting the
    metavar is what every typer version honours."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if param.metavar is None:
                param.metavar = "" if getattr(param, "is_flag", False) else param.name.upper()
        return params


class _Command(_PlainHelp, TyperCommand):
    pass


class _Group(_PlainHelp, TyperGroup):
    pass


class _App(typer.Typer):
    """Every command gets the plain help, including those cli_boards/cli_lifecycle register."""

    def command(self, *args, cls=_Command, **kwargs):
        return super().command(*args, cls=cls, **kwargs)


def _choices(name: str, values) -> type[Enum]:
    """A registry's names as an Enum: typer lists them in the help and refuses others (exit 2)."""
    return Enum(name, {v: v for v in values}, type=str)


Loss = _choices("Loss", sorted(ops.LOSSES))
OptimizerKind = _choices("OptimizerKind", sorted(ops.OPTIMIZERS))
Quantize = _choices("Quantize", ["int8"])
Mode = _choices("Mode", training.MODES)
Update = _choices("Update", quantized.UPDATES)
_OPT = training.Optimizer  # its field defaults are the options' defaults
# The selectors generate and inspect share (../shared/DECISIONS.md section 1).
_TRAIN_LAST = typer.Option(None, "--train-last", metavar="N", help="train only the last N parameterised layers")
_TRAIN_BIAS_ONLY = typer.Option(False, "--train-bias-only", help="train only biases")
_TRAIN_BIAS_LAST = typer.Option(None, "--train-bias-last", metavar="N",
                                help="also train the biases of the last N layers that have one")
_TRAIN_CHANNELS = typer.Option(None, "--train-channels", metavar="PATTERN:FRACTION",
                               help="also train the first FRACTION (rounded up) of the output channels of the "
                               "matching Conv/Gemm/MatMul weights (repeatable)")


def _choice_option(choices: type[Enum], default: str, help: str):
    return typer.Option(choices(default), help=f"{help}: {', '.join(c.value for c in choices)}")


app = _App(cls=_Group, no_args_is_help=True,
           help="Compile an ONNX model into static-memory C that trains on a microcontroller.")


def _version(value: bool) -> None:
    if value:
        out.print(f"mcutrain {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit."),
         quiet: bool = typer.Option(False, "-q", "--quiet", help="no progress display, no notes of what "
                                    "was written where: results and errors only")):
    """Compile an ONNX model into static-memory C that trains on a microcontroller."""
    console.configure(quiet)


@app.command()
def generate(
    model: Path = typer.Argument(..., help="ONNX model file"),
    out_dir: Path = typer.Option(..., "-o", "--out", metavar="DIR", help="output folder"),
    loss: Loss = _choice_option(Loss, "mse", "loss on the model's output"),
    optimizer: OptimizerKind = _choice_option(OptimizerKind, _OPT.kind, "update rule, with PyTorch's semantics"),
    lr: float = typer.Option(_OPT.lr, help="learning rate (settable at run time)"),
    momentum: float = typer.Option(_OPT.momentum, help="SGD momentum"),
    weight_decay: float = typer.Option(_OPT.weight_decay, "--weight-decay",
                                       help="weight decay (L2; decoupled for adamw)"),
    nesterov: bool = typer.Option(_OPT.nesterov, help="SGD Nesterov momentum"),
    beta1: float = typer.Option(_OPT.beta1, help="Adam beta1"),
    beta2: float = typer.Option(_OPT.beta2, help="Adam beta2"),
    eps: float = typer.Option(_OPT.eps, help="Adam epsilon"),
    train: Optional[list[str]] = typer.Option(None, metavar="GLOB", help="train only matching parameters (repeatable)"),
    freeze: Optional[list[str]] = typer.Option(None, metavar="GLOB", help="freeze matching parameters (repeatable)"),
    train_last: Optional[int] = _TRAIN_LAST,
    train_bias_only: bool = _TRAIN_BIAS_ONLY,
    train_bias_last: Optional[int] = _TRAIN_BIAS_LAST,
    train_channels: Optional[list[str]] = _TRAIN_CHANNELS,
    batch: Optional[int] = typer.Option(None, metavar="N", help="pin a dynamic batch dimension"),
    name: Optional[str] = typer.Option(None, metavar="PREFIX", help="C prefix (default: from the model file name)"),
    output: Optional[str] = typer.Option(None, metavar="NAME", help="graph output the loss is attached to"),
    accumulate: int = typer.Option(1, metavar="K", help="micro-batches per step (gradient accumulation): "
                                   "a batch of K x --batch samples in the memory of one micro-batch"),
    fuse_updates: bool = typer.Option(True, "--fuse-updates/--no-fuse-updates",
                                      help="apply plain-SGD updates inside the gradient kernels"),
    ram_budget: Optional[int] = typer.Option(None, "--ram-budget", metavar="BYTES", help="fail unless arena + "
                                             "parameters + optimizer state fit in this many bytes"),
    federated: bool = typer.Option(True, "--federated/--no-federated",
                                   help="keep round-start weights for federated deltas (parameter-sized RAM)"),
    quantize: Optional[Quantize] = typer.Option(None, metavar="int8", help="quantize the float model first "
                                                "(int8 frozen layers); needs --calibration"),
    calibration: Optional[Path] = typer.Option(None, metavar="FILE", help=".npz of sample inputs for --quantize: "
                                               "an array per input name (or x, as train --data takes)"),
    mode: Mode = _choice_option(Mode, "eval", "PyTorch's model.eval() (frozen BatchNorm statistics, no "
                                "Dropout) or model.train() (batch statistics, Dropout active)"),
    untie: bool = typer.Option(False, "--untie", help="give each node reading a shared parameter its own copy "
                               "(torch's exporters merge equal initializers)"),
    update: Update = _choice_option(Update, "float", "how trainable weights of quantized layers train: in float "
                                    "(fake-quantized) or int8 in RAM (int32 biases) with quantization-aware scaling"),
    auto_sparse: bool = typer.Option(False, "--auto-sparse", help="train the best sparse update scheme that fits "
                                     "--ram-budget (as inspect --ram-budget ranks them; replaces the other "
                                     "selectors, --freeze applies; --calibration with labels y: contribution "
                                     "analysis)"),
):
    """Write <name>.h/.c (+ runtime), training_model.onnx, memory.json and mcutrain.json
    (and quantized_model.onnx with --quantize)."""
    summary = call(api.generate, model, out_dir, loss=loss.value, lr=lr, momentum=momentum,
                   weight_decay=weight_decay, nesterov=nesterov, train=train, freeze=freeze,
                   batch=batch, name=name, output=output, optimizer=optimizer.value, beta1=beta1,
                   beta2=beta2, eps=eps, train_last=train_last, train_bias_only=train_bias_only,
                   train_bias_last=train_bias_last, train_channels=train_channels, accumulate=accumulate,
                   fuse_updates=fuse_updates,
                   ram_budget=ram_budget, federated=federated, quantize=quantize and quantize.value,
                   calibration=calibration, mode=mode.value, untie=untie, update=update.value,
                   auto_sparse=auto_sparse, progress=console.status)
    if auto_sparse:
        chosen = summary["auto_sparse"]
        say(printable(f"auto-sparse scheme: {chosen['options']} (RAM {chosen['ram_bytes']:,} B, score "
                      f"{chosen['score']:g} by {chosen['proxy']})"), markup=False)
    note(f"wrote {out_dir}/{summary['name']}.h, {summary['name']}.c, runtime/, "
         f"training_model.onnx, {'quantized_model.onnx, ' if quantize else ''}memory.json, mcutrain.json")
    say(f"trainable: {', '.join(p['name'] for p in summary['params'])}")
    if summary["frozen"]:
        say(f"frozen: {', '.join(summary['frozen'])}")
    print_memory(summary)


@app.command()
def report(
    build_dir: Path = typer.Argument(..., help="folder written by `mcutrain generate`"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    plot: Optional[Path] = typer.Option(None, metavar="FILE", help="write the live-memory timeline (.png or .svg)"),
):
    """Memory report: arena, lower bound, naive size, parameters, optimizer state, constants."""
    from .report import memory_report, plot_timeline

    info = call(memory_report, build_dir)
    if plot:
        call(plot_timeline, info, plot)
    if as_json:
        out.print_json(json.dumps(info))
        return
    print_memory({"memory": info})
    say(f"peak at step {info['peak_step']} of {info['steps']}; placement order '{info['placement_order']}'")
    largest = sorted(info["buffers"], key=lambda b: -b["size"])[:3]  # e.g. a recurrent layer's saved gates
    say(Text("largest buffers: " + ", ".join(f"{b['name']} ({b['size']:,} B)" for b in largest)))
    if plot:
        note(f"timeline written to {plot}")


def _scores(trainer, training_result: fit.EpochResult, held_out) -> str:
    """The training figures, and the held-out ones when there is a --val set."""
    text = training_result.describe("training")
    if held_out is None:
        return text
    return f"{text}; {fit.evaluate(trainer, *held_out).describe('held-out')}"


def _train(build_dir: Path, data: Path, epochs: int, lr: Optional[float], seed: int, save: Optional[Path],
           val: Optional[Path]) -> None:
    from .build import load_host

    x, y = fit.load_data(data)
    held_out = fit.load_data(val) if val else None
    trainer = load_host(build_dir, progress=console.status)
    if lr is not None:
        trainer.set_lr(lr)
    say(f"before training: {_scores(trainer, fit.evaluate(trainer, x, y), held_out)}")
    steps = epochs * (len(x) // trainer.train_batch)
    with console.progress_bar() as bar:
        task = bar.add_task("training", total=steps)
        for epoch, result in enumerate(fit.fit(trainer, x, y, epochs, seed, lambda: bar.advance(task)), 1):
            say(f"epoch {epoch}/{epochs}: {_scores(trainer, result, held_out)}")
    if save:
        blob.write_params(save, trainer.weights(), trainer.manifest)
        note(f"saved the trained parameters to {save}")


@app.command()
def train(
    build_dir: Path = typer.Argument(..., help="folder written by `mcutrain generate`"),
    data: Path = typer.Option(..., metavar="FILE", help=".npz with arrays x (samples, ...) and y (labels)"),
    epochs: int = typer.Option(1, min=1, metavar="N"),
    lr: Optional[float] = typer.Option(None, help="override the generated learning rate"),
    seed: int = typer.Option(0, help="shuffling seed"),
    save: Optional[Path] = typer.Option(None, metavar="FILE", help="write the trained parameters: .npz of "
                                        "name -> array, any other name a parameter blob"),
    val: Optional[Path] = typer.Option(None, metavar="FILE", help="held-out .npz (x, y): its loss and accuracy "
                                       "each epoch"),
):
    """Train on the host (the generated C via cffi): loss and training accuracy per epoch."""
    call(_train, build_dir, data, epochs, lr, seed, save, val)


@app.command()
def inspect(
    model: Path = typer.Argument(..., help="ONNX model file"),
    batch: Optional[int] = typer.Option(None, metavar="N", help="pin a dynamic batch dimension"),
    optimizer: OptimizerKind = _choice_option(OptimizerKind, _OPT.kind, "its state is part of the estimate"),
    momentum: float = typer.Option(_OPT.momentum, help="SGD momentum (needs a state buffer)"),
    train: Optional[list[str]] = typer.Option(None, metavar="GLOB", help="your trainable set (as for generate)"),
    freeze: Optional[list[str]] = typer.Option(None, metavar="GLOB", help="freeze matching parameters"),
    train_last: Optional[int] = _TRAIN_LAST,
    train_bias_only: bool = _TRAIN_BIAS_ONLY,
    train_bias_last: Optional[int] = _TRAIN_BIAS_LAST,
    train_channels: Optional[list[str]] = _TRAIN_CHANNELS,
    federated: bool = typer.Option(True, "--federated/--no-federated",
                                   help="count the round-start copy of the weights (as generate builds it)"),
    mode: Mode = _choice_option(Mode, "eval", "as for generate: train counts BatchNorm's running statistics"),
    ram_budget: Optional[int] = typer.Option(None, "--ram-budget", metavar="BYTES", help="propose sparse update "
                                             "schemes whose RAM fits this many bytes"),
    calibration: Optional[Path] = typer.Option(None, metavar="FILE", help=".npz with x and y: rank the schemes by "
                                               "contribution analysis (a short host fine-tune of each candidate)"),
    lr: float = typer.Option(_OPT.lr, help="learning rate of the contribution analysis's fine-tunes"),
    update: Update = _choice_option(Update, "float", "as for generate: int8 counts trainable weights of quantized "
                                    "layers as one byte each"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
):
    """Ops, shapes, parameters and the memory each trainable set costs, before generating.
    Exits with code 2 when the model has unsupported ops."""
    report = call(api.inspect, model, batch, optimizer=optimizer.value, momentum=momentum, train=train,
                  freeze=freeze, train_last=train_last, train_bias_only=train_bias_only,
                  train_bias_last=train_bias_last, train_channels=train_channels, federated=federated,
                  mode=mode.value, ram_budget=ram_budget, calibration=calibration, lr=lr, update=update.value,
                  progress=console.status)
    if as_json:
        out.print_json(json.dumps(report.to_json()))
    else:
        _print_inspect(report)
    if report.unsupported:
        raise typer.Exit(2)


def _print_inspect(report: Report) -> None:
    """Names from the model are shown as plain text (Text): never read as rich markup."""
    table = Table("op", "node", "output shapes", "supported")
    for n in report.nodes:
        shapes = ", ".join(str(tuple(s)) for s in n.shapes if s is not None)
        table.add_row(Text(printable(n.op)), Text(printable(n.name or n.outputs[0])), shapes,
                      "yes" if n.supported else "[red]NO[/]")
    out.print(table)
    if report.unsupported:
        say(printable(f"unsupported ops: {', '.join(report.unsupported)}; supported: {', '.join(report.supported_ops)}"),
            markup=False)
        return
    say(printable(f"opset {report.opset}; inputs {report.inputs}; outputs {report.outputs}"), markup=False)
    say(printable("parameters: " + ", ".join(f"{p['name']} {tuple(p['shape'])}" for p in report.params)), markup=False)
    if report.note:
        say(report.note)
    if report.memory_by_choice:
        _print_choices(report)
    if report.ram_budget is not None:
        _print_schemes(report)


def _print_choices(report: Report) -> None:
    """One row per trainable set: the RAM it needs (arena, parameters, optimizer state and, for a
    federated build, the round-start copy) and the flash its frozen weights take. Numbers are
    never cut short: headers wrap instead."""
    opt = report.optimizer
    momentum = f", momentum {opt['momentum']:g}" if opt["momentum"] else ""
    columns = {"arena": "arena_bytes", "params": "param_bytes", "opt state": "optimizer_state_bytes"}
    if report.federated:
        columns["copy"] = "round_start_bytes"
    copy = "; copy: the federated round-start weights" if report.federated else ""
    table = Table("trainable set", *columns, "RAM", "flash", box=box.SIMPLE_HEAD,
                  title=f"RAM and flash per trainable set, bytes ({report.loss} loss, {opt['kind']}{momentum}{copy})")
    table.columns[0].no_wrap = True
    rows = [(row.choice, [f"{n:,}" for n in [*(row.memory[k] for k in columns.values()), ram_bytes(row.memory),
                                              row.memory["frozen_bytes"]]]) for row in report.memory_by_choice
            if not row.error]
    for k, column in enumerate(table.columns[1:]):
        column.min_width = max(len(cells[k]) for _, cells in rows) if rows else None
    for row in report.memory_by_choice:
        if row.error:
            table.add_row(row.choice, Text(printable(row.error), style="yellow"))
    for choice, cells in rows:
        table.add_row(choice, *cells)
    out.print(table)
    for row in report.memory_by_choice:
        if row.options:
            say(printable(f"{row.choice}: {row.options}"), markup=False)


def _print_schemes(report: Report) -> None:
    """The sparse update schemes that fit --ram-budget, best first, as the options to type."""
    table = Table("#", "RAM", "params", "score", "options", box=box.SIMPLE_HEAD,
                  title=f"sparse update schemes within {report.ram_budget:,} B of RAM, ranked by "
                        f"{report.schemes[0].proxy}")
    for k, row in enumerate(report.schemes, 1):
        table.add_row(str(k), f"{row.ram_bytes:,}", f"{row.memory['param_bytes']:,}", f"{row.score:.4g}",
                      Text(printable(row.options)))
    out.print(table)


register_boards(app)
register_lifecycle(app)
register_flower(app)
