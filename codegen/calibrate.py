"""`generate --quantize int8 --calibration FILE`: quantize a float model into onnxruntime's QDQ
form (what `quantize_static(..., QuantFormat.QDQ, per_channel=True)` writes, with MinMax
calibration and int8 activations and weights), so the rest of the pipeline meets one quantized
form whichever tool made it, and the result can be checked in onnxruntime.

The method (onnxruntime's, so both tools give the same scales):
- ranges: the float model runs on the calibration inputs (onnx's ReferenceEvaluator); every
  tensor's range is its min and max over all samples, extended to include 0 (so 0 is exact).
- activations: per tensor, asymmetric int8: scale = (max - min) / 255, zero point =
  round(-128 - min / scale) (round half to even) clamped to [-128, 127]. A tensor that was 0 on
  every sample has no range: scale 1, zero point 0 (onnxruntime's rule too).
- weights of Conv (axis 0, also grouped/depthwise), Gemm (the output dim: axis 0 with transB,
  else 1) and MatMul with a constant 2-D B (axis 1): per output channel, symmetric int8:
  scale = max|w| / 127, zero point 0, values in [-127, 127]; an all-zero channel gets scale 1.
- biases: int32 with scale x_scale * w_scale[c] and zero point 0. Where a bias would not fit
  int32, that channel's weight scale grows until it does (instead of clipping the bias).
- a constant operand of Add or Concat is quantized like an activation from its values' range.
- Relu, and Clip whose range includes 0, right after a quantized Conv/Gemm/MatMul/Add/... whose
  output nothing else reads: removed, the producer writes the Relu's output, whose range (within
  [0, max] or [lo, hi]) is then quantized: saturating at the range's ends is the activation.
- which ops: Conv, Gemm, MatMul and Add, Concat, GlobalAveragePool, ReduceMean get Q/DQ on their
  float inputs and their output; MaxPool, AveragePool, Reshape and Flatten of a quantized tensor
  give their output the input's scale and zero point. Every other op stays float, reading the
  DequantizeLinear output of a quantized tensor (onnxruntime also quantizes ops that have no int8
  kernel here, e.g. Sigmoid, Softmax: not this). The model's output is quantized too.
A quantized tensor t becomes t -> QuantizeLinear -> DequantizeLinear -> t_DequantizeLinear_Output
(a graph output keeps its name: its producer writes t_QuantizeLinear_Input), named as
onnxruntime names them; weights become <w>_quantized + DequantizeLinear -> <w>_DequantizeLinear_Output,
a bias <b>_quantized + DequantizeLinear -> <b>.
"""
from __future__ import annotations

import contextlib
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from . import loader, npz
from .errors import InternalError, ModelError, OptionError

QUANTIZED_MODEL = "quantized_model.onnx"  # written into the build folder
INT8, SYMMETRIC = (-128, 127), (-127, 127)
INT32_MAX = 2**31 - 1
CHUNK = 32  # samples evaluated at once when the batch dim is dynamic

WEIGHTED = {"Conv", "Gemm", "MatMul"}  # int8 weights per channel, int32 bias
OWN_RANGE = {"Add", "Concat", "GlobalAveragePool", "ReduceMean"}  # output quantized from its own range
SAME_RANGE = {"MaxPool", "AveragePool", "Reshape", "Flatten"}  # output keeps the input's scale
# How many leading inputs are quantized activations (others: all; the rest are weights, axes).
QUANTIZED_INPUTS = {"Conv": 1, "Gemm": 1, "MatMul": 1, "GlobalAveragePool": 1, "ReduceMean": 1}
ACTIVATIONS = {"Relu", "Clip"}
ALREADY_QUANTIZED = re.compile(r"(Dynamic)?(Quantize|Dequantize)Linear|QLinear\w+|QGemm|\w+Integer")


@contextlib.contextmanager
def model_to_compile(model: Path, quantize: str | None, calibration: str | Path | None
                     ) -> Iterator[tuple[Path, dict[str, bytes]]]:
    """The model file generate compiles and the extra files it writes: `model` itself and none,
    or with quantize='int8' the QDQ model (a temporary file while the block runs) and
    quantized_model.onnx."""
    if quantize is None and calibration is None:
        yield model, {}
        return
    if quantize != "int8":
        raise OptionError(f"--quantize {quantize}: only int8 is supported" if quantize else
                          "--calibration is only used with --quantize int8; add --quantize int8 or drop it")
    if calibration is None:
        raise OptionError("--quantize int8 needs --calibration FILE: an .npz of sample inputs (as the model "
                          "sees them at inference) from which activation ranges are measured")
    source = loader.upgraded(model)
    done = next((n.op_type for n in source.graph.node if ALREADY_QUANTIZED.fullmatch(n.op_type)), None)
    if done:
        raise OptionError(f"'{model}' is already quantized (it has {done} nodes); generate it without "
                          "--quantize/--calibration")
    data = quantize_model(source, read_calibration(Path(calibration), source)).SerializeToString()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / QUANTIZED_MODEL
        path.write_bytes(data)
        yield path, {QUANTIZED_MODEL: data}


@contextlib.contextmanager
def for_estimates(model: Path, batch: int | None) -> Iterator[Path | None]:
    """The model quantized on one all-zero sample (a temporary file while the block runs), for
    memory estimates: the calibration data changes scales, not sizes. None for a model that is
    quantized already or has dynamic dimensions besides the batch."""
    source = loader.upgraded(model)
    dims = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in _model_inputs(source)}
    if any(ALREADY_QUANTIZED.fullmatch(n.op_type) for n in source.graph.node) or \
            any(0 in d[1:] for d in dims.values()):
        yield None
        return
    zeros = {name: np.zeros([d[0] or batch or 1, *d[1:]], np.float32) for name, d in dims.items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / QUANTIZED_MODEL
        path.write_bytes(quantize_model(source, zeros).SerializeToString())
        yield path


# ---- calibration data ----

def _model_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def read_calibration(path: Path, model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """One float32 array per model input, keyed by input name: (samples, *input shape[1:]). The
    .npz holds one array per input name; a single-input model also takes 'x' (a `train --data` file)."""
    if not path.is_file():
        raise OptionError(f"--calibration file '{path}' not found")
    inputs = _model_inputs(model)
    with npz.Archive(path, "an .npz file of calibration inputs") as archive:
        arrays = {i.name: _calibration_array(archive, i, len(inputs) == 1) for i in inputs}
    counts = {name: len(a) for name, a in arrays.items()}
    if len(set(counts.values())) > 1:
        raise OptionError(f"--calibration '{path}': the inputs have different numbers of samples {counts}; "
                          "give every input the same samples")
    return arrays


def _calibration_array(archive: npz.Archive, inp: onnx.ValueInfoProto, single: bool) -> np.ndarray:
    name = inp.name
    key = name if name in archive.names else "x" if single and "x" in archive.names else None
    if key is None:
        also = " (or 'x', as in a `train --data` file)" if single else ""
        raise OptionError(f"--calibration '{archive.path}' has no array for model input '{name}': save one "
                          f"named '{name}'{also} with numpy.savez (the file has {sorted(archive.names)})")
    what = f"--calibration '{archive.path}': array '{key}'" + (f" (model input '{name}')" if key != name else "")
    arr = archive.array(key)
    if arr.dtype.kind != "f":
        raise OptionError(f"{what} has dtype {arr.dtype}; save float samples, preprocessed as the model sees "
                          "them at inference")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    if not dims or arr.ndim != len(dims) or any(d is not None and d != n for d, n in zip(dims[1:], arr.shape[1:])):
        expected = ", ".join(["N", *(str(d) if d is not None else "?" for d in dims[1:])])
        raise OptionError(f"{what} has shape {arr.shape}, expected ({expected}): N samples of the input's shape")
    if len(arr) == 0 or (dims[0] and len(arr) % dims[0]):
        raise OptionError(f"{what} has {len(arr)} samples; the model's batch dim is {dims[0] or 'dynamic'}: "
                          "give a positive multiple of it")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise OptionError(f"{what} has {bad} NaN or infinite values; calibrate on real samples")
    return arr.astype(np.float32)


def _evaluate(model: onnx.ModelProto, calibration: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """Every float tensor's (min, max) over the calibration samples, run in chunks of the fixed
    batch size (or CHUNK); and every tensor's value in the last chunk (for constants)."""
    dims = [i.type.tensor_type.shape.dim for i in _model_inputs(model)]
    batch = min((d[0].dim_value for d in dims if d and d[0].HasField("dim_value")), default=CHUNK)
    samples = len(next(iter(calibration.values())))
    ranges: dict[str, tuple[np.float32, np.float32]] = {}
    try:
        evaluator = ReferenceEvaluator(model)
        for start in range(0, samples, batch):
            values = evaluator.run(None, {n: a[start:start + batch] for n, a in calibration.items()},
                                   intermediate=True)
            _widen(ranges, values)
    except Exception as e:  # whatever the reference implementation of an op raises
        raise ModelError(f"onnx's reference evaluator cannot run the model on the calibration samples "
                         f"({loader._why(e)})") from None
    return ranges, values


def _widen(ranges: dict, values: dict[str, np.ndarray]) -> None:
    for name, value in values.items():
        value = np.asarray(value)
        if name and value.dtype == np.float32 and value.size:
            low, high = ranges.get(name, (value.min(), value.max()))
            ranges[name] = (min(low, value.min()), max(high, value.max()))


# ---- scales and zero points ----

def _scale_zero_point(low, high, qrange: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """onnxruntime's rule (compute_scale_zp): the range extended to 0, scale in float64 stored as
    float32, scale 1 and zero point 0 for an empty range."""
    qmin, qmax = qrange
    low = np.minimum(np.asarray(low, np.float32), 0).astype(np.float64)
    high = np.maximum(np.asarray(high, np.float32), 0).astype(np.float64)
    scale = (high - low) / (qmax - qmin)
    empty = scale < np.finfo(np.float32).tiny
    scale = np.where(empty, 1.0, scale)
    zero_point = np.where(empty, 0, np.clip(np.round(qmin - low / scale), qmin, qmax))
    return scale.astype(np.float32), zero_point.astype(np.int8)


def _weight(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel symmetric int8 scales of `w` along `axis`."""
    absmax = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(axis=1)
    return _scale_zero_point(-absmax, absmax, SYMMETRIC)


def _quantize(value: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int, dtype, qrange) -> np.ndarray:
    shape = [-1 if a == axis else 1 for a in range(value.ndim)] if scale.ndim else []
    q = np.round(value / scale.reshape(shape)) + zero_point.astype(np.float64).reshape(shape)
    return np.clip(q, *qrange).astype(dtype)


# ---- which tensors are quantized ----

def _kind(node: onnx.NodeProto, inits: dict[str, np.ndarray], floats) -> str | None:
    """How `node` is quantized: "weighted", "own" (range), "same" (range as its input) or None
    (stays float). `floats`: the names of float tensors."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx") or not node.input or node.input[0] not in floats \
            or node.output[0] not in floats:
        return None
    if op in WEIGHTED:
        return "weighted" if _has_weights(node, inits) else None
    if op in OWN_RANGE:
        return "own" if all(i in floats for i in node.input[:QUANTIZED_INPUTS.get(op)]) else None
    return "same" if op in SAME_RANGE else None


def _has_weights(node: onnx.NodeProto, inits: dict[str, np.ndarray]) -> bool:
    """A float32 initializer weight (2-D for Gemm/MatMul) and a bias initializer of one value per
    output channel or none, on an activation; Gemm without transA, alpha or beta."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    weight = inits.get(node.input[1])
    bias = node.input[2] if len(node.input) > 2 else ""
    if weight is None or weight.dtype != np.float32 or node.input[0] in inits:
        return False
    if node.op_type != "Conv" and (weight.ndim != 2 or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0
                                   or attrs.get("beta", 1.0) != 1.0):
        return False
    channels = (weight.shape[_weight_axis(node)],)
    return not bias or (bias in inits and inits[bias].dtype == np.float32 and inits[bias].shape == channels)


def _weight_axis(node: onnx.NodeProto) -> int:
    """The weight's output-channel axis: Conv [M, C/g, ...] 0; Gemm [N, K] with transB, else [K, N]; MatMul [K, N]."""
    if node.op_type == "Gemm":
        return 0 if any(a.name == "transB" and a.i for a in node.attribute) else 1
    return 1 if node.op_type == "MatMul" else 0


def _fold_activations(graph: onnx.GraphProto, inits: dict, floats, constants: dict) -> None:
    """Remove each Relu/Clip (whose range holds 0) that alone reads the output of an op quantized
    with its own range: the producer writes the activation's output instead."""
    producers = {o: n for n in graph.node for o in n.output}
    readers = Counter(i for n in graph.node for i in n.input)
    outputs = {o.name for o in graph.output}
    for node in list(graph.node):
        source = node.input[0] if node.op_type in ACTIVATIONS and not node.domain else None
        producer = producers.get(source)
        if producer is None or _kind(producer, inits, floats) not in ("weighted", "own") \
                or readers[source] != 1 or source in outputs or not _clip_holds_zero(node, constants):
            continue
        producer.output[list(producer.output).index(source)] = node.output[0]
        graph.node.remove(node)


def _clip_holds_zero(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> bool:
    """Relu, or a Clip with constant bounds (absent: unbounded) whose [min, max] includes 0."""
    if node.op_type == "Relu":
        return True
    low, high = (node.input[k] if len(node.input) > k else "" for k in (1, 2))
    return all(not b or b in constants for b in (low, high)) and \
        (not low or bool(constants[low] <= 0)) and (not high or bool(constants[high] >= 0))


def _plan(graph: onnx.GraphProto, inits: dict, floats) -> tuple[dict[str, str], list[onnx.NodeProto]]:
    """The quantized tensors, each mapped to the tensor whose range gives its scale and zero point
    (itself, or for a SAME_RANGE op's output its input's), and the WEIGHTED nodes. Graph order,
    so a SAME_RANGE op shares only a range that something before it quantized (as onnxruntime)."""
    shared: dict[str, str] = {}
    weighted = []
    for node in graph.node:
        kind = _kind(node, inits, floats)
        if kind == "same" and node.input[0] in shared:
            shared[node.output[0]] = shared[node.input[0]]
        elif kind in ("weighted", "own"):
            for name in node.input[:QUANTIZED_INPUTS.get(node.op_type)]:
                shared.setdefault(name, name)
            shared[node.output[0]] = node.output[0]
            if kind == "weighted":
                weighted.append(node)
    return shared, weighted


# ---- the QDQ model ----

def quantize_model(model: onnx.ModelProto, calibration: dict[str, np.ndarray]) -> onnx.ModelProto:
    """`model` (float, as loader.upgraded gives it) in QDQ form, its ranges measured on
    `calibration` (input name -> samples): see the module's docstring."""
    ranges, values = _evaluate(model, calibration)
    model = _copy(model)
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    constant_nodes = {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    _fold_activations(graph, inits, ranges, {n: values[n] for n in [*inits, *constant_nodes] if n in values})
    shared, weighted = _plan(graph, inits, ranges)
    qdq = _QDQ(graph, ranges)
    for name, provider in shared.items():
        qdq.tensor(name, provider, inits.get(name))
    for node in weighted:
        qdq.weights(node, inits, shared[node.input[0]])
    qdq.write()
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise InternalError(f"the quantized model is not valid ONNX ({loader._why(e)})") from None
    return model


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = _clone(model)
    del copy.graph.value_info[:]  # renamed tensors: shape inference runs again on loading
    return copy


def _clone(message):
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


class _QDQ:
    """Collects the Q/DQ nodes and integer initializers, then writes them into the graph: the
    DQ of constants and the Q/DQ of graph inputs first, an activation's pair after its producer."""

    def __init__(self, graph: onnx.GraphProto, ranges: dict):
        self.graph, self.ranges = graph, ranges
        self.outputs = {o.name for o in graph.output}
        self.produced = {o for n in graph.node for o in n.output}
        self.front: list[onnx.NodeProto] = []
        self.after: dict[str, list[onnx.NodeProto]] = {}  # tensor -> the Q/DQ placed after its producer
        self.reads: dict[str, str] = {}  # tensor -> the DequantizeLinear output its readers take instead
        self.writes: dict[str, str] = {}  # graph output -> the name its producer writes now
        self.replaced: dict[str, list[onnx.TensorProto]] = {}  # float initializer -> its integer form
        self.params: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # range's owner -> (scale, zero point)
        self.new: list[onnx.TensorProto] = []

    def activation(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The scale and zero point of `name`'s range, also as initializers <name>_scale/_zero_point."""
        if name not in self.params:
            if not np.all(np.isfinite(self.ranges[name])):
                raise OptionError(f"tensor '{name}' reaches NaN or infinity on the calibration data, so it has no "
                                  "range to quantize; check the samples (scale, preprocessing)")
            self.params[name] = _scale_zero_point(*self.ranges[name], INT8)
            self.new += [numpy_helper.from_array(v, f"{name}{suffix}")
                         for v, suffix in zip(self.params[name], ("_scale", "_zero_point"))]
        return self.params[name]

    def tensor(self, name: str, provider: str, value: np.ndarray | None) -> None:
        """Q/DQ for activation `name` with `provider`'s range; a constant (`value`) is stored as int8."""
        scale, zero_point = self.activation(provider)
        names = [f"{provider}_scale", f"{provider}_zero_point"]
        if value is not None:
            q = _quantize(value, scale, zero_point, None, np.int8, INT8)
            self._constant(name, {f"{name}_quantized": q, **dict.fromkeys(names)}, None,
                           f"{name}_DequantizeLinear_Output")
            return
        source, out = name, f"{name}_DequantizeLinear_Output"
        if name in self.outputs:  # the output keeps its name: it comes from the DequantizeLinear
            source, out = f"{name}_QuantizeLinear_Input", name
            self.writes[name] = source
        else:
            self.reads[name] = out
        pair = [helper.make_node("QuantizeLinear", [source, *names], [f"{name}_QuantizeLinear_Output"],
                                 name=f"{name}_QuantizeLinear"),
                helper.make_node("DequantizeLinear", [f"{name}_QuantizeLinear_Output", *names], [out],
                                 name=f"{name}_DequantizeLinear")]
        (self.after.setdefault(name, []) if name in self.produced else self.front).extend(pair)

    def weights(self, node: onnx.NodeProto, inits: dict[str, np.ndarray], provider: str) -> None:
        """A Conv/Gemm/MatMul's weight as per-channel int8 and its bias as int32 (scale x_scale * w_scale)."""
        x_scale = self.params[provider][0]
        name, axis = node.input[1], _weight_axis(node)
        scale, zero_point = _weight(inits[name], axis)
        bias = node.input[2] if len(node.input) > 2 else ""
        if bias:
            b = inits[bias].astype(np.float64)
            scale = np.maximum(scale, (np.abs(b) * 1.0001 / (x_scale * INT32_MAX)).astype(np.float32))
            b_scale, b_zero = (x_scale * scale).astype(np.float32), np.zeros(len(b), np.int32)
            q = _quantize(b, b_scale, b_zero, 0, np.int32, (-INT32_MAX - 1, INT32_MAX))
            self._constant(bias, {f"{bias}_quantized": q, f"{bias}_quantized_scale": b_scale,
                                f"{bias}_quantized_zero_point": b_zero}, 0, bias)
        self._constant(name, {f"{name}_quantized": _quantize(inits[name], scale, zero_point, axis, np.int8, SYMMETRIC),
                            f"{name}_scale": scale, f"{name}_zero_point": zero_point},
                     axis, f"{name}_DequantizeLinear_Output")

    def _constant(self, name: str, arrays: dict[str, np.ndarray | None], axis: int | None, out: str) -> None:
        """Initializer `name` replaced by DequantizeLinear(integer value, scale, zero point) -> `out`;
        `arrays` holds them by name (None: an initializer already made)."""
        self.replaced[name] = [numpy_helper.from_array(v, k) for k, v in arrays.items() if v is not None]
        attrs = {} if axis is None else {"axis": axis}
        self.front.append(helper.make_node("DequantizeLinear", list(arrays), [out],
                                           name=f"{name}_DequantizeLinear", **attrs))
        if out != name:
            self.reads[name] = out

    def write(self) -> None:
        g = self.graph
        nodes = list(self.front)
        read = {i for n in g.node for i in n.input} | self.outputs
        for node in map(_clone, g.node):
            if node.op_type == "Constant" and node.output[0] not in read:  # a folded Clip's bound
                continue
            pairs = [n for o in node.output for n in self.after.get(o, [])]
            _rename(node.input, self.reads)
            _rename(node.output, self.writes)
            nodes += [node, *pairs]
        inits = [t for i in g.initializer for t in self.replaced.get(i.name, [_clone(i)])] + self.new
        inputs = [_clone(i) for i in g.input if i.name not in self.replaced]
        for field, items in (("node", nodes), ("initializer", inits), ("input", inputs)):
            g.ClearField(field)
            getattr(g, field).extend(items)


def _rename(names, renamed: dict[str, str]) -> None:
    for k, name in enumerate(names):
        names[k] = renamed.get(name, name)
