"""The Python API; the CLI is a thin layer over it. generate() runs the whole pipeline:
load -> training graph -> memory plan -> C emission -> files."""
from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from . import blob, budget, calibrate, export, loader, manifest, memory, ops, tied, training
from . import flower_app as flower_app_writer
from .ctext import identifiers
from .emit import emit, input_idents, running_names
from .errors import OptionError
from .files import write_all
from .paths import runtime_dir
from .inspection import ChoiceRow, NodeRow, Report
from .ir import CONST, FROZEN, PARAM, RUNNING, STATE
from .training_onnx import to_onnx

# Generated code names its own symbols mt_* and the input pointers in_*: a prefix must differ.
RESERVED_PREFIXES = ("mt", "in")


def _default_name(model: Path) -> str:
    name = re.sub(r"_+", "_", identifiers([model.stem.lower()])[model.stem.lower()]).strip("_")
    return f"m_{name}" if name.lower() in RESERVED_PREFIXES else name or "model"


def _check_prefix(prefix: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", prefix):
        raise OptionError(f"--name {prefix!r} is not a C identifier (letters, digits, _; at most 64)")
    if prefix.lower() in RESERVED_PREFIXES:
        raise OptionError(f"--name {prefix!r} is reserved for the generated code's own symbols; choose another")


_OPT = training.Optimizer  # its field defaults are the defaults of every option below


def generate(model: str | Path, out_dir: str | Path, loss: str = "mse", lr: float = _OPT.lr,
             momentum: float = _OPT.momentum, weight_decay: float = _OPT.weight_decay,
             nesterov: bool = _OPT.nesterov,
             train: str | list[str] | None = None, freeze: str | list[str] | None = None,
             batch: int | None = None, name: str | None = None, output: str | None = None,
             optimizer: str = _OPT.kind, beta1: float = _OPT.beta1, beta2: float = _OPT.beta2,
             eps: float = _OPT.eps,
             train_last: int | None = None, train_bias_only: bool = False, train_bias_last: int | None = None,
             train_channels: str | list[str] | None = None, fuse_updates: bool = True,
             accumulate: int = 1, ram_budget: int | None = None, federated: bool = True,
             quantize: str | None = None, calibration: str | Path | None = None, mode: str = "eval",
             untie: bool = False) -> dict:
    """Compile `model` into a trainer in `out_dir`; returns the summary (also in mcutrain.json).
    train/freeze: glob patterns on parameter names, one string or a list of them.
    train_channels: "PATTERN:FRACTION" (or a list): also train the first ceil(FRACTION x n) output
    channels of the matching weights (codegen/channels.py).
    quantize="int8" with calibration (an .npz of sample inputs): the model is first quantized
    (codegen/calibrate.py), then compiled as a QDQ model; quantized_model.onnx is written too.
    mode="train": PyTorch's model.train() (BatchNorm batch statistics, Dropout active).
    Parameters read by several nodes train as one tensor (a McutrainWarning names them); untie=True
    gives each use its own copy (codegen/tied.py)."""
    model, out_dir = Path(model), Path(out_dir)
    prefix = name or _default_name(model)
    _check_prefix(prefix)
    spec = Spec(loss, training.Optimizer(lr, momentum, weight_decay, nesterov, optimizer, beta1, beta2, eps),
                training.Selection(train, freeze, train_last, train_bias_only, train_bias_last, train_channels),
                batch, output,
                fuse_updates, accumulate, mode)
    with tied.resolved(model, untie) as source, \
            calibrate.model_to_compile(source, quantize, calibration) as (compiled, quantized):
        graph, tg, plan = compile_plan(compiled, spec)
        summary = _summary(tg, plan, prefix, str(model), federated)
        summary["model_hash"] = blob.model_hash(tg)
        if ram_budget is not None:
            budget.check(ram_budget, summary, lambda alt: _memory(compiled, alt, federated), spec,
                         {"--quantize int8 --calibration FILE": lambda: _int8_memory(compiled, spec, federated)})
        source = export.source_bytes(compiled)
    banner = "from " + shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    files = {**emit(tg, plan, prefix, banner, summary["model_hash"], federated),
             export.SOURCE_MODEL: source, **quantized,
             "training_model.onnx": to_onnx(tg, graph.opset).SerializeToString(),
             "memory.json": json.dumps(plan.to_json(), indent=1),
             "runtime/mt_common.h": (runtime_dir() / "mt_common.h").read_text()}
    for kernel in sorted((runtime_dir() / "kernels").glob("*.h")):  # small; some include others
        files[f"runtime/kernels/{kernel.name}"] = kernel.read_text()
    write_all(out_dir, {**files, manifest.NAME: manifest.dumps(summary, files)})  # the manifest last
    return summary


@dataclass(frozen=True)
class Spec:
    """Everything that decides the training graph and its memory plan."""
    loss: str
    optimizer: training.Optimizer
    selection: training.Selection
    batch: int | None = None
    output: str | None = None
    fuse_updates: bool = True
    accumulate: int = 1
    mode: str = "eval"


def compile_plan(model: Path, spec: Spec):
    """load -> training graph -> memory plan: (graph, training graph, plan), nothing written."""
    if spec.batch is not None and spec.batch < 1:
        raise OptionError("--batch must be >= 1")
    if spec.accumulate < 1:
        raise OptionError("--accumulate must be >= 1")
    graph = loader.load(model, spec.batch)
    tg = training.build(graph, spec.loss, spec.optimizer, spec.output, spec.selection,
                        spec.fuse_updates, spec.accumulate, spec.mode)
    return graph, tg, memory.plan(tg)


def _bytes(graph, role) -> int:
    return sum(t.nbytes for t in graph.of_role(role))


def _summary(tg, plan, prefix: str, source: str, federated: bool = False) -> dict:
    """federated: the C keeps a copy of the round-start weights for deltas (parameter-sized RAM)."""
    g = tg.graph
    label = g.tensors[tg.label]
    return {
        "name": prefix, "source": source, "loss": tg.loss_name, "accumulate": tg.accumulate,
        "optimizer": asdict(tg.optimizer),
        "inputs": [{"name": n, "c": c, "shape": list(g.shape(n))} for n, c in input_idents(g.inputs).items()],
        "output": {"name": tg.output, "shape": list(g.shape(tg.output))},
        "labels": {"shape": list(label.shape), "dtype": label.dtype},
        "params": [{"name": n, "shape": list(g.shape(n))} for n in tg.trainable],
        "state": [{"name": n, "shape": list(g.shape(n))} for n in running_names(g)],
        "frozen": tg.frozen,
        "memory": {"arena_bytes": plan.arena_bytes, "lower_bound_bytes": plan.lower_bound,
                   "naive_bytes": plan.naive_bytes,
                   "param_bytes": _bytes(g, PARAM), "frozen_bytes": _bytes(g, FROZEN),
                   "const_bytes": _bytes(g, CONST), "optimizer_state_bytes": _bytes(g, STATE),
                   "round_start_bytes": (_bytes(g, PARAM) + _bytes(g, RUNNING)) if federated else 0,
                   "running_stats_bytes": _bytes(g, RUNNING)},
        "federated": federated,
    }


def inspect(model: str | Path, batch: int | None = None, optimizer: str = _OPT.kind, momentum: float = _OPT.momentum,
            train: str | list[str] | None = None, freeze: str | list[str] | None = None,
            train_last: int | None = None, train_bias_only: bool = False, train_bias_last: int | None = None,
            train_channels: str | list[str] | None = None, federated: bool = True, mode: str = "eval") -> Report:
    """Ops (and which are supported), shapes, parameters and the memory each trainable set costs
    (full, last layer, biases, and the given train/freeze/train_last/train_bias_only/train_bias_last choice) with
    the given optimizer, before generating. A dynamic batch dim is pinned to 1 if not given.
    federated: count the round-start copy, as generate (federated by default) would build it.
    mode: as generate's ("train" counts BatchNorm's running statistics as RAM state)."""
    raw = loader.upgraded(Path(model))
    note = None
    if batch is None and loader.has_dynamic_batch(raw):
        batch, note = 1, "dynamic batch dim pinned to 1 for this estimate (use --batch)"
    folded = loader.fold(raw, batch)  # as generate judges a model: after folding constant chains
    nodes = [NodeRow(n.op_type, n.domain, n.name, list(n.output),
                     (n.domain if n.domain != "ai.onnx" else "", n.op_type) in ops.REGISTRY) for n in folded.nodes]
    report = Report(loader.default_opset(raw), nodes, ops.supported_ops(),
                    sorted({n.op for n in nodes if not n.supported}), federated=federated, note=note)
    if report.unsupported:
        return report
    graph = loader.to_ir(folded)
    shapes = {n: list(t.shape) for n, t in graph.tensors.items()}
    for n in nodes:
        n.shapes = [shapes.get(o) for o in n.outputs]
    report.inputs, report.outputs = {n: shapes[n] for n in graph.inputs}, {n: shapes[n] for n in graph.outputs}
    report.params = [{"name": t.name, "shape": list(t.shape)} for t in graph.of_role(PARAM)]
    if len(graph.outputs) == 1:
        report.loss = "cross_entropy" if len(graph.shape(graph.outputs[0])) == 2 else "mse"
        opt = training.Optimizer(momentum=momentum, kind=optimizer)
        own = training.Selection(train, freeze, train_last, train_bias_only, train_bias_last, train_channels)
        report.optimizer = asdict(opt)
        report.memory_by_choice = _memory_by_choice(Path(model), Spec(report.loss, opt, own, batch, mode=mode),
                                                     federated)
    return report


CHOICES = {"full training": training.Selection(), "--train-last 1": training.Selection(last=1),
           "--train-bias-only": training.Selection(bias_only=True)}


def _memory_by_choice(model: Path, spec: Spec, federated: bool) -> list[ChoiceRow]:
    """The memory summary of each common trainable set, then of spec's own selection if it has
    one: what a choice costs in RAM before generating anything."""
    rows = []
    for choice, selection in CHOICES.items():
        try:
            rows.append(ChoiceRow(choice, _memory(model, replace(spec, selection=selection), federated)))
        except OptionError as e:  # e.g. --train-bias-only on a model without biases
            rows.append(ChoiceRow(choice, error=str(e)))
    if spec.selection != training.Selection():
        rows.append(ChoiceRow("your choice", _memory(model, spec, federated), options=_flags(spec.selection)))
    int8 = {"int8, --train-last 1": training.Selection(last=1)}
    if spec.selection != training.Selection():
        int8["int8, your choice"] = spec.selection
    with calibrate.for_estimates(model, spec.batch) as quantized:
        for choice, selection in int8.items() if quantized else ():  # a float model: with int8 frozen layers
            rows.append(ChoiceRow(choice, _memory(quantized, replace(spec, selection=selection), federated),
                                  options=f"--quantize int8 --calibration FILE {_flags(selection)}"))
    return rows


def _memory(model: Path, spec: Spec, federated: bool) -> dict:
    """The memory summary of `spec` for `model`, nothing written."""
    _, tg, plan = compile_plan(model, spec)
    return _summary(tg, plan, "model", str(model), federated)["memory"]


def _int8_memory(model: Path, spec: Spec, federated: bool) -> dict:
    """The memory summary of `spec` with the model's frozen layers in int8 (refused for a model
    that is quantized already)."""
    with calibrate.for_estimates(model, spec.batch) as quantized:
        if quantized is None:
            raise OptionError("the model is quantized already")
        return _memory(quantized, spec, federated)


def _flags(sel: training.Selection) -> str:
    """The command-line options that make `sel`."""
    flags = [f"--train {p}" for p in sel.train or []] + [f"--freeze {p}" for p in sel.freeze or []]
    if sel.last is not None:
        flags.append(f"--train-last {sel.last}")
    if sel.bias_only:
        flags.append("--train-bias-only")
    if sel.bias_last is not None:
        flags.append(f"--train-bias-last {sel.bias_last}")
    return " ".join(flags + [f"--train-channels {c}" for c in sel.channels or []])


def flower_app(build_dir: str | Path, data: str | Path, out_dir: str | Path, clients: int = 10) -> Path:
    """`mcutrain flower-app`: a Flower App training `build_dir` over `clients` simulated clients."""
    return flower_app_writer.write(build_dir, data, out_dir, clients)
