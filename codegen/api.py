"""The Python API; the CLI is a thin layer over it. generate() runs the whole pipeline:
load -> training graph -> memory plan -> C emission -> files."""
from __future__ import annotations

import copy
import json
import re
import shlex
import sys
import tempfile
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from . import blob, budget, calibrate, export, fit, loader, manifest, memory, ops, sparse_schemes, tied, training
from . import flower_app as flower_app_writer
from .build import Progress, load_host
from .ctext import identifiers
from .emit import emit, input_idents, running_names
from .errors import OptionError
from .files import write_all
from .paths import runtime_dir
from .inspection import ChoiceRow, NodeRow, Report, SchemeRow
from .ir import CONST, FROZEN, PARAM, RUNNING, STATE
from .manifest import words
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
             untie: bool = False, auto_sparse: bool = False, update: str = "float",
             progress: Progress = nullcontext) -> dict:
    """Compile `model` into a trainer in `out_dir`; returns the summary (also in mcutrain.json).
    train/freeze: glob patterns on parameter names, one string or a list of them.
    train_channels: "PATTERN:FRACTION" (or a list): also train the first ceil(FRACTION x n) output
    channels of the matching weights (codegen/channels.py).
    quantize="int8" with calibration (an .npz of sample inputs): the model is first quantized
    (codegen/calibrate.py), then compiled as a QDQ model; quantized_model.onnx is written too.
    mode="train": PyTorch's model.train() (BatchNorm batch statistics, Dropout active).
    update="int8": trainable weights of quantized layers stay int8 (biases int32) and train on
    their integers with quantization-aware scaling (codegen/ops/qas.py); needs a quantized model.
    Parameters read by several nodes train as one tensor (a McutrainWarning names them); untie=True
    gives each use its own copy (codegen/tied.py).
    auto_sparse=True (needs ram_budget, replaces train/train_last/train_bias_*/train_channels; freeze
    still applies): trains the best sparse update scheme that fits (codegen/sparse_schemes.py),
    ranked by contribution analysis when `calibration` has labels y, else by heuristics; the
    returned summary then also has it under "auto_sparse" (an inspect SchemeRow's JSON).
    progress(text): a context manager around each fine-tune of the contribution analysis (the CLI's
    spinner)."""
    model, out_dir = Path(model), Path(out_dir)
    if auto_sparse:
        _check_auto_sparse(ram_budget, train=train, train_last=train_last, train_bias_only=train_bias_only,
                           train_bias_last=train_bias_last, train_channels=train_channels)
    prefix = name or _default_name(model)
    _check_prefix(prefix)
    spec = Spec(loss, training.Optimizer(lr, momentum, weight_decay, nesterov, optimizer, beta1, beta2, eps),
                training.Selection(train, freeze, train_last, train_bias_only, train_bias_last, train_channels),
                batch, output,
                fuse_updates, accumulate, mode, update)
    with tied.resolved(model, untie) as source, \
            calibrate.model_to_compile(source, quantize, None if auto_sparse and not quantize else calibration) \
            as (compiled, quantized):
        if auto_sparse:
            data = calibration and sparse_schemes.calibration_data(Path(calibration), required=not quantize)
            chosen = _schemes(compiled, spec, federated, ram_budget, data, progress)[0]
            spec = chosen.spec
        graph, tg, plan = compile_plan(compiled, spec)
        summary = _summary(tg, plan, prefix, str(model), federated)
        summary["model_hash"] = blob.model_hash(tg)
        if ram_budget is not None:
            budget.check(ram_budget, summary, lambda alt: _memory(compiled, alt, federated), spec,
                         {"--quantize int8 --calibration FILE": lambda: _int8_memory(compiled, spec, federated),
                          "--auto-sparse": lambda: _schemes(compiled, spec, federated, ram_budget)[0].memory})
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
    return {**summary, "auto_sparse": chosen.to_json()} if auto_sparse else summary


def _check_auto_sparse(ram_budget: int | None, **selectors) -> None:
    given = [f"--{k.replace('_', '-')}" for k, v in selectors.items() if v]
    if given:
        raise OptionError(f"--auto-sparse chooses the trainable set itself: drop {', '.join(given)} "
                          "(--freeze still applies)")
    if ram_budget is None:
        raise OptionError("--auto-sparse needs --ram-budget BYTES: the RAM the scheme must fit")


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
    update: str = "float"  # --update: how trainable weights of quantized layers train


def compile_plan(model: Path, spec: Spec):
    """load -> training graph -> memory plan: (graph, training graph, plan), nothing written."""
    if spec.batch is not None and spec.batch < 1:
        raise OptionError("--batch must be >= 1")
    if spec.accumulate < 1:
        raise OptionError("--accumulate must be >= 1")
    graph = loader.load(model, spec.batch)
    return (graph, *_plan_graph(graph, spec))


def _plan_graph(graph, spec: Spec):
    """training graph -> memory plan of a loaded `graph` (which it changes): (training graph, plan)."""
    tg = training.build(graph, spec.loss, spec.optimizer, spec.output, spec.selection,
                        spec.fuse_updates, spec.accumulate, spec.mode, spec.update)
    return tg, memory.plan(tg)


def _bytes(graph, role) -> int:
    """Bytes of a role's tensors; parameters as the parameter blob holds them (whole 4-byte words:
    an int8 tensor of --update int8 is padded to a multiple of 4)."""
    return sum(4 * words(t.dtype, t.size) if role == PARAM else t.nbytes for t in graph.of_role(role))


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
        "params": [{"name": n, "shape": list(g.shape(n)), "dtype": g.tensors[n].dtype} for n in tg.trainable],
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
            train_channels: str | list[str] | None = None, federated: bool = True, mode: str = "eval",
            ram_budget: int | None = None, calibration: str | Path | None = None, lr: float = _OPT.lr,
            update: str = "float", progress: Progress = nullcontext) -> Report:
    """Ops (and which are supported), shapes, parameters and the memory each trainable set costs
    (full, last layer, biases, and the given train/freeze/train_last/train_bias_only/train_bias_last choice) with
    the given optimizer, before generating. A dynamic batch dim is pinned to 1 if not given.
    federated: count the round-start copy, as generate (federated by default) would build it.
    mode: as generate's ("train" counts BatchNorm's running statistics as RAM state).
    update: as generate's ("int8": the trainable weights of quantized layers count one byte each).
    ram_budget: also propose sparse update schemes that fit it (codegen/sparse_schemes.py; freeze
    applies, the other selectors do not), ranked by contribution analysis on `calibration` (an .npz
    with x and y; fine-tuned with lr, each fine-tune inside progress(text)) when given, else by heuristics."""
    if calibration is not None and ram_budget is None:
        raise OptionError("--calibration ranks the sparse update schemes of --ram-budget BYTES: add --ram-budget")
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
        opt = training.Optimizer(lr, momentum=momentum, kind=optimizer)
        own = training.Selection(train, freeze, train_last, train_bias_only, train_bias_last, train_channels)
        report.optimizer = asdict(opt)
        spec = Spec(report.loss, opt, own, batch, mode=mode, update=update)
        report.memory_by_choice = _memory_by_choice(Path(model), spec, federated)
        if ram_budget is not None:
            data = calibration and sparse_schemes.calibration_data(Path(calibration), required=True)
            report.ram_budget = ram_budget
            report.schemes = _schemes(Path(model), spec, federated, ram_budget, data, progress)
    elif ram_budget is not None:
        raise OptionError("--ram-budget proposals need a model with one output (the loss is attached to it)")
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


def _schemes(model: Path, spec: Spec, federated: bool, budget: int, data=None,
             progress: Progress = nullcontext) -> list[SchemeRow]:
    """The sparse update schemes that fit `budget` bytes (codegen/sparse_schemes.py), best first:
    `model` loaded once, every scheme planned on a copy; ranked by contribution analysis on `data`
    ((x, y): each candidate fine-tuned by its host trainer) or, without data, by heuristics."""
    graph = loader.load(model, spec.batch)
    space = sparse_schemes.Space.of(graph, spec.selection.freeze)

    def memory_of(scheme: sparse_schemes.Scheme) -> dict:
        tg, plan = _plan_graph(copy.deepcopy(graph), scheme.apply(spec))
        return _summary(tg, plan, "model", str(model), federated)["memory"]

    def rows(gain, proxy: str) -> list[SchemeRow]:
        return [SchemeRow(p.scheme.options(), p.ram, round(p.score, 6), proxy, p.memory, p.scheme.apply(spec))
                for p in sparse_schemes.propose(space, memory_of, budget, gain)]
    if data is None:
        return rows(sparse_schemes.heuristic_gain(space), "heuristics")
    with tempfile.TemporaryDirectory(prefix="mcutrain-schemes-") as tmp:
        def trainer_of(scheme: sparse_schemes.Scheme):
            out = Path(tmp) / f"scheme{len(list(Path(tmp).iterdir()))}"
            generate(model, out, federated=False, **_generate_options(scheme.apply(spec)))
            return load_host(out)
        return rows(sparse_schemes.Measured(trainer_of, *data, progress), "contribution analysis")


def _generate_options(spec: Spec) -> dict:
    """generate()'s keyword arguments that make `spec`."""
    o, s = spec.optimizer, spec.selection
    return dict(loss=spec.loss, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov,
                optimizer=o.kind, beta1=o.beta1, beta2=o.beta2, eps=o.eps, train=s.train, freeze=s.freeze,
                train_last=s.last, train_bias_only=s.bias_only, train_bias_last=s.bias_last,
                train_channels=s.channels, batch=spec.batch, output=spec.output, fuse_updates=spec.fuse_updates,
                accumulate=spec.accumulate, mode=spec.mode, update=spec.update)


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


def flower_app(build_dir: str | Path, data: str | Path, out_dir: str | Path, clients: int = 10,
               board: str | None = None) -> Path:
    """`mcutrain flower-app`: a Flower App training `build_dir` over `clients` simulated clients;
    with `board` (a target), that board's federated firmware plays client 0."""
    return flower_app_writer.write(build_dir, data, out_dir, clients, board)
