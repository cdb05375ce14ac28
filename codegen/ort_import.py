"""ONNX Runtime training artifacts (onnxruntime.training.artifacts.generate_artifacts) as an input:
recover the inference model (the training graph's nodes that need no gradient, weights from the
checkpoint), the loss and the optimizer, then compile them with the normal pipeline. Needs no
onnxruntime-training: the checkpoint's flatbuffer is read directly (ort_training_checkpoint.fbs)."""
from __future__ import annotations

import glob
import struct
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import api, ops
from .errors import ModelError, UnsupportedError

FILES = ("training_model.onnx", "optimizer_model.onnx", "checkpoint")
LOSSES = {("SoftmaxCrossEntropyLoss",): "cross_entropy", ("Sub", "Pow", "ReduceMean"): "mse"}


class _Table:
    """One flatbuffer table: fields by slot index (the schema's field order)."""

    def __init__(self, buf: bytes, pos: int):
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]

    def _field(self, slot: int) -> int | None:
        size = struct.unpack_from("<H", self.buf, self.vtable)[0]
        off = struct.unpack_from("<H", self.buf, self.vtable + 4 + 2 * slot)[0] if 4 + 2 * slot < size else 0
        return self.pos + off if off else None

    def _ref(self, slot: int) -> int | None:
        at = self._field(slot)
        return None if at is None else at + struct.unpack_from("<I", self.buf, at)[0]

    def scalar(self, slot: int, fmt: str, default):
        at = self._field(slot)
        return default if at is None else struct.unpack_from("<" + fmt, self.buf, at)[0]

    def vector(self, slot: int) -> tuple[int, int]:
        """(position of the first element, length)."""
        at = self._ref(slot)
        return (0, 0) if at is None else (at + 4, struct.unpack_from("<I", self.buf, at)[0])

    def table(self, slot: int) -> _Table | None:
        at = self._ref(slot)
        return None if at is None else _Table(self.buf, at)

    def tables(self, slot: int) -> list[_Table]:
        start, n = self.vector(slot)
        return [_Table(self.buf, start + 4 * i + struct.unpack_from("<I", self.buf, start + 4 * i)[0]) for i in range(n)]

    def string(self, slot: int) -> str:
        start, n = self.vector(slot)
        return self.buf[start:start + n].decode()


def read_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(trainable, frozen) float tensors of an ORT training checkpoint."""
    buf = path.read_bytes()
    if buf[4:8] != b"ODTC":
        raise ModelError(f"'{path}' is not an ONNX Runtime training checkpoint (no 'ODTC' identifier)")
    state = _Table(buf, struct.unpack_from("<I", buf, 0)[0]).table(1)
    if state is None or state.scalar(2, "?", False) or state.scalar(3, "?", False):
        raise UnsupportedError(f"'{path}': nominal checkpoints and external data are not supported")

    def tensors(slot):
        out = {}
        for t in state.tables(slot):
            name, (start, ndim), dtype = t.string(0), t.vector(2), t.scalar(3, "i", 0)
            if dtype != TensorProto.FLOAT:
                raise UnsupportedError(f"checkpoint tensor '{name}' has ONNX dtype {dtype}; only float32 is supported")
            dims = struct.unpack_from(f"<{ndim}q", buf, start)
            raw_start, n = t.vector(4)
            out[name] = np.frombuffer(buf, "<f4", n // 4, raw_start).reshape(dims).astype(np.float32)
        return out
    return tensors(0), tensors(1)


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


def _loss(forward, inputs: list[str], inits: dict) -> tuple[str, str]:
    """(loss kind, model output) of the forward nodes: the label is the input the fewest nodes
    depend on; the nodes that depend on it form the loss, which must be one we compile."""
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
    produced = {o for n in block for o in n.output}
    model_out = [i for n in block for i in n.input if i and i != label and i not in produced and i not in inits]
    return kind, model_out[0]


def _optimizer(path: Path) -> dict:
    nodes = list(onnx.load(str(path)).graph.node)
    if len(nodes) == 1 and nodes[0].op_type == "SGDOptimizerV2":
        return {"optimizer": "sgd"}
    if len(nodes) == 1 and nodes[0].op_type == "AdamWOptimizer":
        a = {x.name: helper.get_attribute_value(x) for x in nodes[0].attribute}
        return {"optimizer": "adamw", "beta1": a.get("alpha", 0.9), "beta2": a.get("beta", 0.999),
                "eps": a.get("epsilon", 1e-8), "weight_decay": a.get("weight_decay", 0.0)}
    raise UnsupportedError(f"optimizer model '{path}' has {[n.op_type for n in nodes]}; supported: "
                           "SGDOptimizerV2 (OptimType.SGD), AdamWOptimizer (OptimType.AdamW)")


def recover(artifacts: Path) -> tuple[onnx.ModelProto, dict]:
    """(inference model, generate() options: loss, optimizer and its hyperparameters, trainable set)."""
    missing = [f for f in FILES if not (artifacts / f).is_file()]
    if missing:
        raise ModelError(f"'{artifacts}' lacks {', '.join(missing)} (written by generate_artifacts)")
    train, frozen = read_checkpoint(artifacts / "checkpoint")
    training = onnx.load(str(artifacts / "training_model.onnx"))
    graph = training.graph
    inits = {i.name: i for i in graph.initializer}
    weights = {**train, **frozen}
    # Gradient side: the loss-gradient seed, accumulation buffers and reset flag, and all they feed.
    seeds = {n for n in inits if n.endswith("_grad")} | {i.name for i in graph.input if i.name not in weights
                                                          and (i.name.endswith(".buffer") or i.name == "lazy_reset_grad")}
    nodes = list(graph.node)  # one Python object per node: identity below is stable
    backward = {id(n) for n in _dependents(nodes, seeds)}
    forward = _needed([n for n in nodes if id(n) not in backward], {graph.output[0].name})  # the loss
    data = [i.name for i in graph.input if i.name not in weights and i.name not in seeds]
    if len(data) < 2:
        raise ModelError(f"'{artifacts}': expected model input(s) and a label among the graph inputs, found {data}")
    kind, output = _loss(forward, data, inits)
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
    inferred = onnx.shape_inference.infer_shapes(model).graph  # the output's type and shape
    model.graph.output[0].CopyFrom(next(v for v in [*inferred.output, *inferred.value_info] if v.name == output
                                        and v.type.HasField("tensor_type")))
    selection = None if not frozen else [glob.escape(n) for n in train]
    return model, {"loss": kind, "train": selection, **_optimizer(artifacts / "optimizer_model.onnx")}


def generate_from_artifacts(artifacts: str | Path, out_dir: str | Path, lr: float = 0.01, **options) -> dict:
    """Compile ORT training artifacts like `generate` compiles a model; `options` as generate's
    (batch, name, ...). The learning rate is not part of the artifacts (ORT sets it at run time)."""
    model, recovered = recover(Path(artifacts))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(model, str(path))
        return api.generate(path, out_dir, lr=lr, **recovered, **options)
