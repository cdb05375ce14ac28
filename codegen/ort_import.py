"""ONNX Runtime training artifacts (onnxruntime.training.artifacts.generate_artifacts) as an input:
recover the inference model (the training graph's nodes that need no gradient, weights from the
checkpoint), the loss and the optimizer, then compile them with the normal pipeline. Needs no
onnxruntime-training: the checkpoint's flatbuffer is read directly (ort_training_checkpoint.fbs)."""
from __future__ import annotations

import glob
import math
import struct
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import api, loader, ops, training
from .errors import ModelError, UnsupportedError

FILES = ("training_model.onnx", "optimizer_model.onnx", "checkpoint")
GRAD_BUFFER = "_grad.accumulation.buffer"  # training model input: gradient accumulator of parameter <name>
# AdamWOptimizer attribute -> (generate() option, default)
ADAMW = {"alpha": ("beta1", 0.9), "beta": ("beta2", 0.999), "epsilon": ("eps", 1e-8),
         "weight_decay": ("weight_decay", 0.0)}
LOSSES = {("SoftmaxCrossEntropyLoss",): "cross_entropy", ("Sub", "Pow", "ReduceMean"): "mse"}


def _corrupt(path: Path, what: str) -> ModelError:
    return ModelError(f"'{path}' is corrupt: {what}; re-create it with generate_artifacts")


class _Reader:
    """The checkpoint's bytes. Every read goes through `unpack`, `vector` or `string`, which check
    it against the file: a truncated or corrupt checkpoint is one ModelError, not a traceback."""

    def __init__(self, path: Path):
        self.path, self.buf = path, path.read_bytes()

    def corrupt(self, what: str) -> ModelError:
        return _corrupt(self.path, what)

    def unpack(self, fmt: str, at: int, what: str) -> tuple:
        """The values of `fmt` at byte `at`; `what` names them in the error."""
        size = struct.calcsize("<" + fmt)
        if not 0 <= at <= len(self.buf) - size:
            raise self.corrupt(f"{what} ({size} bytes at byte {at}) lies outside the file ({len(self.buf)} bytes)")
        return struct.unpack_from("<" + fmt, self.buf, at)

    def value(self, fmt: str, at: int, what: str):
        return self.unpack(fmt, at, what)[0]

    def vector(self, at: int, item: int) -> tuple[int, int]:
        """(position of the first element, length) of the vector at `at` with `item`-byte elements."""
        n = self.value("I", at, "a vector's length")
        if n * item > len(self.buf) - at - 4:
            raise self.corrupt(f"a vector of {n} x {item} bytes at byte {at + 4} runs past the end of the file")
        return at + 4, n

    def string(self, at: int) -> str:
        start, n = self.vector(at, 1)
        try:
            return self.buf[start:start + n].decode()
        except UnicodeDecodeError:
            raise self.corrupt(f"the name at byte {start} is not UTF-8") from None


class _Table:
    """One flatbuffer table: fields by slot index (the schema's field order)."""

    def __init__(self, reader: _Reader, pos: int):
        self.r, self.pos = reader, pos
        self.vtable = pos - reader.value("i", pos, "a table's vtable offset")
        self.vsize = reader.value("H", self.vtable, "a vtable")

    def _field(self, slot: int) -> int | None:
        at = 4 + 2 * slot
        off = self.r.value("H", self.vtable + at, "a vtable entry") if at < self.vsize else 0
        return self.pos + off if off else None

    def _ref(self, slot: int) -> int | None:
        at = self._field(slot)
        return None if at is None else at + self.r.value("I", at, "an offset")

    def scalar(self, slot: int, fmt: str, default):
        at = self._field(slot)
        return default if at is None else self.r.value(fmt, at, "a scalar field")

    def vector(self, slot: int, item: int) -> tuple[int, int]:
        """(position of the first element, length); (0, 0) when absent."""
        at = self._ref(slot)
        return (0, 0) if at is None else self.r.vector(at, item)

    def table(self, slot: int) -> _Table | None:
        at = self._ref(slot)
        return None if at is None else _Table(self.r, at)

    def tables(self, slot: int) -> list[_Table]:
        start, n = self.vector(slot, 4)
        return [_Table(self.r, start + 4 * i + self.r.value("I", start + 4 * i, "an offset")) for i in range(n)]

    def string(self, slot: int) -> str:
        at = self._ref(slot)
        return "" if at is None else self.r.string(at)


def _tensor(r: _Reader, t: _Table) -> tuple[str, np.ndarray]:
    """(name, value) of one checkpoint tensor; dims must be non-negative and match the data size."""
    name, (start, ndim), dtype = t.string(0), t.vector(2, 8), t.scalar(3, "i", 0)
    if dtype not in TensorProto.DataType.values() or dtype == TensorProto.UNDEFINED:
        raise r.corrupt(f"tensor '{name}' has data type {dtype}, which ONNX does not define")
    if dtype != TensorProto.FLOAT:
        raise UnsupportedError(f"checkpoint '{r.path}': tensor '{name}' is {TensorProto.DataType.Name(dtype)}; "
                               "only float32 is supported")
    dims = r.unpack(f"{ndim}q", start, f"tensor '{name}' dims")
    raw_start, n = t.vector(4, 1)
    if min(dims, default=0) < 0 or math.prod(dims) * 4 != n:
        raise r.corrupt(f"tensor '{name}' has dims {list(dims)} but {n} bytes of float32 data")
    return name, np.frombuffer(r.buf, "<f4", n // 4, raw_start).reshape(dims).astype(np.float32)


def read_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(trainable, frozen) float tensors of an ORT training checkpoint."""
    r = _Reader(path)
    if r.buf[4:8] != b"ODTC":
        raise ModelError(f"'{path}' is not an ONNX Runtime training checkpoint (no 'ODTC' identifier)")
    state = _Table(r, r.value("I", 0, "the root offset")).table(1)
    if state is None:
        raise r.corrupt("it has no module state")
    if state.scalar(2, "?", False) or state.scalar(3, "?", False):
        raise UnsupportedError(f"'{path}': nominal checkpoints and external data are not supported")
    lists = [[_tensor(r, t) for t in state.tables(slot)] for slot in (0, 1)]
    repeated = sorted(n for n, k in Counter(name for tensors in lists for name, _ in tensors).items() if k > 1)
    if repeated:
        raise r.corrupt(f"tensor name(s) {', '.join(repeated)} appear more than once")
    return dict(lists[0]), dict(lists[1])


def _dependents(nodes, sources: set[str]) -> list:
    """Nodes that (transitively) read any of `sources`, in graph order."""
    tainted, found = set(sources), []
    for n in nodes:
        if tainted.intersection(n.input):
            found.append(n)
            tainted.update(n.output)
    return found


def _needed(nodes, outputs: set[str]) -> list:
    """The nodes needed to compute `outputs`, in graph order."""
    needed, keep = set(outputs), []
    for n in reversed(nodes):
        if needed.intersection(n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
    return keep[::-1]


def _loss(forward, inputs: list[str], inits: dict, training: Path) -> tuple[str, str]:
    """(loss kind, model output) of the forward nodes: the label is the input the fewest nodes
    depend on; the nodes that depend on it form the loss, which must be one we compile and read
    what the other nodes compute."""
    label = min(inputs, key=lambda i: len(_dependents(forward, {i})))
    block = _dependents(forward, {label})
    key = tuple(n.op_type for n in block)
    kind = LOSSES.get(key)
    attrs = {a.name: helper.get_attribute_value(a) for n in block for a in n.attribute}
    if kind == "mse":  # (target - output) ** 2, exponent an initializer
        exponent = inits.get(block[1].input[1])
        kind = kind if exponent is not None and np.all(numpy_helper.to_array(exponent) == 2) else None
    if kind is None or attrs.get("reduction", b"mean") != b"mean" or (kind == "cross_entropy" and len(block[0].input) > 2):
        raise UnsupportedError(f"the artifacts' loss ({', '.join(key) or 'none found'}) is not one mcutrain compiles; "
                               "supported: LossType.CrossEntropyLoss and LossType.MSELoss (mean reduction)")
    in_block = {id(n) for n in block}
    computed = {o for n in forward if id(n) not in in_block for o in n.output}
    model_out = [i for n in block for i in n.input if i in computed]
    if not model_out:
        raise _corrupt(training, f"its loss ({', '.join(key)}) reads no output of the model")
    return kind, model_out[0]


def _adamw_options(path: Path, node: onnx.NodeProto) -> dict:
    """generate()'s AdamW options from the node's attributes, each a finite float when present."""
    attrs = {a.name: a for a in node.attribute}
    for name in sorted(ADAMW.keys() & attrs.keys()):
        if attrs[name].type != onnx.AttributeProto.FLOAT or not math.isfinite(attrs[name].f):
            raise _corrupt(path, f"AdamWOptimizer attribute '{name}' is {helper.get_attribute_value(attrs[name])!r}, "
                                 "not a finite float")
    return {"optimizer": "adamw",
            **{option: attrs[name].f if name in attrs else default for name, (option, default) in ADAMW.items()}}


def _optimizer(path: Path) -> dict:
    nodes = list(loader.read(path).graph.node)
    if len(nodes) == 1 and nodes[0].op_type == "SGDOptimizerV2":
        return {"optimizer": "sgd"}
    if len(nodes) == 1 and nodes[0].op_type == "AdamWOptimizer":
        return _adamw_options(path, nodes[0])
    raise UnsupportedError(f"optimizer model '{path}' has {[n.op_type for n in nodes]}; supported: "
                           "SGDOptimizerV2 (OptimType.SGD), AdamWOptimizer (OptimType.AdamW)")


def _check_match(artifacts: Path, train: dict[str, np.ndarray], frozen: dict[str, np.ndarray],
                 graph: onnx.GraphProto) -> None:
    """The checkpoint holds every parameter the training model trains, and each of its tensors is an
    input of that model with its shape: both files come from one generate_artifacts run (else the
    recovered model would be inconsistent)."""
    inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    trained = {name.removesuffix(GRAD_BUFFER) for name in inputs if name.endswith(GRAD_BUFFER)}
    missing = sorted(trained - train.keys())
    problems = [f"it lacks {', '.join(missing)}, which the training model trains"] if missing else []
    problems += [f"tensor '{name}' is {list(value.shape)} in the checkpoint, the training model "
                 + ("has no such input" if name not in inputs else f"declares {inputs[name]}")
                 for name, value in {**train, **frozen}.items() if inputs.get(name) != list(value.shape)]
    if problems:
        raise ModelError(f"'{artifacts / 'checkpoint'}' does not match '{artifacts / 'training_model.onnx'}': "
                         f"{', '.join(problems)}; re-create both with generate_artifacts")


def _typed(model: onnx.ModelProto, output: str, training: Path) -> onnx.ValueInfoProto:
    """`output` with its type and shape, inferred; strict inference refuses a forward part whose
    shapes do not fit together (a corrupt training model) rather than leave it untyped."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    except onnx.shape_inference.InferenceError as e:
        raise _corrupt(training, f"its model part fails shape inference ({str(e).splitlines()[0]})") from None
    return next(v for v in [*inferred.output, *inferred.value_info]
                if v.name == output and v.type.HasField("tensor_type"))


def recover(artifacts: Path) -> tuple[onnx.ModelProto, dict]:
    """(inference model, generate() options: loss, optimizer and its hyperparameters, trainable set)."""
    missing = [f for f in FILES if not (artifacts / f).is_file()]
    if missing:
        raise ModelError(f"'{artifacts}' lacks {', '.join(missing)} (written by generate_artifacts)")
    train, frozen = read_checkpoint(artifacts / "checkpoint")
    training_path = artifacts / "training_model.onnx"
    training = loader.read(training_path)
    graph = training.graph
    if not graph.output:
        raise _corrupt(training_path, "it has no outputs (the first is the loss)")
    inits = {i.name: i for i in graph.initializer}
    weights = {**train, **frozen}
    _check_match(artifacts, train, frozen, graph)
    # Gradient side: the loss-gradient seed, accumulation buffers and reset flag, and all they feed.
    seeds = {n for n in inits if n.endswith("_grad")} | {i.name for i in graph.input if i.name not in weights
                                                          and (i.name.endswith(".buffer") or i.name == "lazy_reset_grad")}
    nodes = list(graph.node)  # one Python object per node: identity below is stable
    backward = {id(n) for n in _dependents(nodes, seeds)}
    forward = _needed([n for n in nodes if id(n) not in backward], {graph.output[0].name})  # the loss
    data = [i.name for i in graph.input if i.name not in weights and i.name not in seeds]
    if len(data) < 2:
        raise ModelError(f"'{artifacts}': expected model input(s) and a label among the graph inputs, found {data}")
    kind, output = _loss(forward, data, inits, training_path)
    forward = _needed(forward, {output})
    unsupported = sorted({n.op_type for n in forward if (n.domain if n.domain != "ai.onnx" else "", n.op_type)
                          not in ops.REGISTRY and n.op_type not in ("Constant", "Shape")})
    if unsupported:
        raise UnsupportedError(f"the artifacts' model uses op(s) mcutrain does not cover: {', '.join(unsupported)}; "
                               f"supported: {', '.join(ops.supported_ops())}")
    used = {i for n in forward for i in n.input}
    value_info = {v.name: v for v in graph.input}
    model = helper.make_model(helper.make_graph(
        forward, "recovered", [value_info[i] for i in data if i in used], [onnx.ValueInfoProto(name=output)],
        [numpy_helper.from_array(v, n) for n, v in weights.items() if n in used]
        + [inits[n] for n in inits if n in used]),
        opset_imports=[o for o in training.opset_import if o.domain in ("", "ai.onnx")])
    model.graph.output[0].CopyFrom(_typed(model, output, training_path))
    selection = None if not frozen else [glob.escape(n) for n in train]
    return model, {"loss": kind, "train": selection, **_optimizer(artifacts / "optimizer_model.onnx")}


def generate_from_artifacts(artifacts: str | Path, out_dir: str | Path, lr: float = training.Optimizer.lr,
                            **options) -> dict:
    """Compile ORT training artifacts like `generate` compiles a model; `options` as generate's
    (batch, name, ...). The learning rate is not part of the artifacts (ORT sets it at run time)."""
    model, recovered = recover(Path(artifacts))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(model, str(path))
        return api.generate(path, out_dir, lr=lr, **recovered, **options)
