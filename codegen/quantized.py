"""Quantized models: onnxruntime's QDQ form (quantize_static) and the QOperator form, in two
passes around the choice of what trains.

recognize(graph), right after loading: uint8 becomes int8 (values and zero points shifted by
-128: real values do not change, so every int8 kernel serves both), and each DequantizeLinear
of a constant (a weight or bias the quantizer stored as integers) becomes a float parameter
under its float name, carrying its integer form (ir.Quantized). Trainable-set patterns and
layers therefore see the float model; scales and zero points are never parameters.

lower(graph), once the trainable set is known: a layer with frozen weights between
DequantizeLinear of an int8 activation and a QuantizeLinear becomes the QOperator op that runs
it in integer arithmetic (QLinearConv, QGemm, ...); MaxPool and views with equal scales move onto the int8
tensor. AveragePool stays float (onnxruntime averages in float; fixed-point averages over windows
of different tap counts round ties differently). A trainable bias stays float (QuantizeBias makes its int32 form at every step); a
gradient passes through int8 layers whose ops have a gradient rule (dX from the int8 weights,
1-bit masks). Whatever is not lowered (layers with trainable weights, ops without an int8
kernel or gradient) runs in float between its Q/DQ nodes: the model's arithmetic, fake-quantized.

lower(graph, update="int8") (`--update int8`) lowers the layers with trainable weights too: the
weight becomes an int8 parameter (its integers, in RAM) and a trainable bias of an int8 layer an
int32 one, both updated on their integer grid (quantization-aware scaling, codegen/ops/qas.py).
A trainable quantized weight that cannot run in int8 then is refused, naming its layer.
"""
from __future__ import annotations

import numpy as np

from . import ops
from .autodiff import requires_grad
from .errors import McutrainError, ModelError, OptionError, UnsupportedError
from .ops._qlinear import BIAS_LIMIT
from .ir import ACT, CONST, FROZEN, PARAM, TRAIN_DOMAIN, Graph, Node, Quantized, Tensor

QDQ = ("QuantizeLinear", "DequantizeLinear")
MS = "com.microsoft"  # onnxruntime's contrib ops: QGemm, QLinearAdd, ... (the QOperator form)


# ---- recognize ----

def recognize(graph: Graph) -> Graph:
    if not any(n.op in QDQ for n in graph.nodes) and not any(t.dtype == "uint8" for t in graph.tensors.values()):
        return graph
    for node in graph.nodes:
        if node.op in QDQ and not node.domain:
            _check_qdq(graph, node)
    _to_int8(graph)
    for node in [n for n in graph.nodes if n.op == "DequantizeLinear" and graph.tensors[n.inputs[0]].role == CONST]:
        _parameter(graph, node)
    _drop_unused(graph)
    return graph


def _const(graph: Graph, node: Node, slot: int) -> np.ndarray:
    name = node.inputs[slot]
    t = graph.tensors[name]
    if t.role not in (CONST, FROZEN):  # a float initializer is FROZEN until parameters are marked
        raise UnsupportedError(f"{node.describe()}: its {('scale', 'zero point')[slot - 1]} '{name}' is computed "
                               "at run time; only constant scales and zero points are supported")
    t.role = CONST
    return t.value


def _check_qdq(graph: Graph, node: Node) -> None:
    """Scales positive and finite, zero points of a type the int8 path runs; a missing zero
    point becomes an explicit one (uint8 0, as the spec defaults)."""
    if node.attrs.get("output_dtype", 0) not in (0, 2, 3):  # UINT8, INT8
        raise UnsupportedError(f"{node.describe()}: output_dtype {node.attrs['output_dtype']}; only int8 and "
                               "uint8 quantization is supported")
    scale = _const(graph, node, 1)
    if scale.dtype != np.float32 or not np.all(np.isfinite(scale)) or not np.all(scale > 0):
        raise ModelError(f"{node.describe()}: scale '{node.inputs[1]}' must be positive, finite float32 values "
                         f"(got {scale.dtype} {np.asarray(scale).ravel()[:4].tolist()}); quantize the model again")
    if len(node.inputs) < 3 or not node.inputs[2]:
        data = graph.tensors[node.inputs[0]]
        dtype = data.dtype if node.op == "DequantizeLinear" else "uint8"
        zp = graph.add(f"{node.inputs[1]}_zero_point", scale.shape, dtype, CONST, np.zeros(scale.shape, dtype))
        node.inputs[2:] = [zp]
    zp = _const(graph, node, 2)
    constant = graph.tensors[node.inputs[0]].role == CONST
    allowed = ("int8", "uint8", "int32") if node.op == "DequantizeLinear" and constant else ("int8", "uint8")
    if str(zp.dtype) not in allowed:
        raise UnsupportedError(f"{node.describe()}: zero point '{node.inputs[2]}' is {zp.dtype}; the int8 path "
                               f"supports {', '.join(allowed)} here")
    if zp.size != scale.size:
        raise ModelError(f"{node.describe()}: zero point '{node.inputs[2]}' has shape {list(zp.shape)}, its scale "
                         f"{list(scale.shape)}; they must match")


def _to_int8(graph: Graph) -> None:
    """q - 128 with zero point - 128 has the real value of q: uint8 tensors become int8."""
    for t in graph.tensors.values():
        if t.dtype != "uint8":
            continue
        if t.role == CONST:
            t.value = (t.value.astype(np.int16) - 128).astype(np.int8)
        elif t.role != ACT:
            raise UnsupportedError(f"tensor '{t.name}' is uint8; only float32 model inputs are supported")
        t.dtype = "int8"


def float_name(source: str, output: str, taken) -> str:
    """The parameter that DequantizeLinear(source) -> output becomes: onnxruntime stores weight W
    as 'W_quantized', so it is called W again (unless another tensor has that name), else output.
    Also how export finds a trained parameter's DequantizeLinear in the source model."""
    name = source.removesuffix("_quantized")
    return name if name != source and name not in taken else output


def _parameter(graph: Graph, node: Node) -> None:
    """Replace DequantizeLinear(constant) by the float tensor it computes, integer form kept."""
    q, scale, zp = (graph.tensors[i].value for i in node.inputs[:3])
    axis = node.attrs.get("axis", 1) % max(q.ndim, 1) if scale.ndim else 0
    along = [-1 if d == axis else 1 for d in range(q.ndim)] if scale.ndim else []
    value = (q.astype(np.int64) - zp.reshape(along)).astype(np.float32) * scale.reshape(along)
    out = node.outputs[0]
    name = float_name(node.inputs[0], out, graph.tensors)
    if out in graph.outputs:
        raise UnsupportedError(f"{node.describe()}: a dequantized constant as the model output")
    del graph.tensors[out]
    graph.tensors[name] = Tensor(name, value.shape, "float32", FROZEN, value, quant=Quantized(q, scale, zp, axis))
    graph.nodes.remove(node)
    for other in graph.nodes:
        other.inputs = [name if i == out else i for i in other.inputs]


def _drop_unused(graph: Graph) -> None:
    used = {i for n in graph.nodes for i in n.inputs} | {o for n in graph.nodes for o in n.outputs}
    for name in [n for n, t in graph.tensors.items() if t.role in (CONST, FROZEN) and n not in used]:
        del graph.tensors[name]


# ---- lower ----

def _int32(b: Tensor, scale: np.ndarray) -> np.ndarray:
    """The int32 form of bias b at `scale` (x scale * w scale): the model's own integers when it
    stored them at that scale (zero point 0), else rint(b / scale); saturated at BIAS_LIMIT."""
    q = b.quant
    if q is not None and q.values.dtype == np.int32 and not np.any(q.zero_point) \
            and np.array_equal(np.broadcast_to(q.scale, b.shape), scale):
        return q.values.reshape(b.shape)
    return np.clip(np.rint(b.value / scale), -BIAS_LIMIT, BIAS_LIMIT).astype(np.int32)


def _check_integer(graph: Graph) -> None:
    """Under --update int8 every trainable quantized weight and its layer's bias run on integers."""
    left = [t.name for t in graph.of_role(PARAM) if t.quant is not None and t.dtype == "float32"
            and t.quant.values.dtype == np.int8]
    if left:
        readers = [n.describe() for n in graph.nodes if left[0] in n.inputs]
        raise OptionError(f"--update int8: trainable weight '{left[0]}' ({', '.join(readers)}) cannot run in "
                          "int8 (its layer needs an int8 input and a QuantizeLinear after it, as Conv, Gemm or "
                          "MatMul of a QDQ model; e.g. transA or alpha != 1 are not, nor some channels of a "
                          "grouped Conv): train all of it, freeze it or use --update float")


class _Lowering:
    """The graph's producers and readers, and the rewrites: each replaces a float node and the
    QuantizeLinear after it by one int8 node writing that QuantizeLinear's output."""

    def __init__(self, graph: Graph, update: str = "float"):
        self.graph, self.update = graph, update
        self.producer = {o: n for n in graph.nodes for o in n.outputs if o}
        self.readers: dict[str, list[Node]] = {}
        for n in graph.nodes:
            for i in n.inputs:
                self.readers.setdefault(i, []).append(n)
        self.replaced: dict[int, Node | None] = {}  # id(node) -> its replacement (None: removed)
        self.before: dict[int, list[Node]] = {}  # id(node) -> nodes its replacement needs first
        self.carries_gradient = requires_grad(graph, graph.nodes)
        self.integer: list[tuple[Tensor, str, np.ndarray]] = []  # parameters the node being lowered makes integer

    def int8_input(self, name: str) -> list[str] | None:
        """[q, scale, zero point] if `name` is DequantizeLinear of an int8 activation."""
        dq = self.producer.get(name)
        if dq is None or dq.op != "DequantizeLinear" or self.graph.tensors[dq.inputs[0]].role != ACT:
            return None
        return dq.inputs[:3]

    def quantized_output(self, node: Node) -> Node | None:
        """The QuantizeLinear that is the only reader of the node's output."""
        out = node.outputs[0]
        readers = self.readers.get(out, [])
        if out in self.graph.outputs or len(readers) != 1 or readers[0].op != "QuantizeLinear":
            return None
        return readers[0]

    def frozen_weight(self, name: str) -> Tensor | None:
        """A quantized int8 weight the layer can run on in int8: frozen, or trainable under
        --update int8."""
        t = self.graph.tensors.get(name)
        runs = t is not None and (t.role == FROZEN or t.role == PARAM and self.update == "int8")
        return t if runs and t.quant is not None and t.quant.values.dtype == np.int8 else None

    def const(self, name: str, value, role: str = CONST) -> str:
        value = np.asarray(value)
        return self.graph.add(name, value.shape, str(value.dtype), role, value)

    def weight(self, w: Tensor) -> list[str]:
        """[int8 values, scale, zero point] of a frozen quantized weight."""
        qw = w.quant
        if w.role == PARAM:  # --update int8: the parameter itself becomes its integers
            self.integer.append((w, "int8", qw.values))
            return [w.name, self.const(f"{w.name}_scale", qw.scale),
                    self.const(f"{w.name}_zero_point", qw.zero_point.astype(np.int8))]
        return [self.const(f"{w.name}_quantized", qw.values, FROZEN), self.const(f"{w.name}_scale", qw.scale),
                self.const(f"{w.name}_zero_point", qw.zero_point.astype(np.int8))]

    def bias(self, node: Node, name: str, x_scale: str, w: Tensor) -> str | None:
        """The int32 bias at scale x_scale * w_scale (as the int8 kernels add it to the sums): a
        constant for a frozen bias; for a trainable one, QuantizeBias computes it at every step.
        None (the layer stays float) for a bias computed at run time (e.g. shared through an
        Identity) or one that does not fit int32."""
        if not name:
            return ""
        b = self.graph.tensors[name]
        if b.value is None:
            return None
        scale = np.broadcast_to(self.graph.tensors[x_scale].value.astype(np.float64) * w.quant.scale, b.shape)
        if b.role == PARAM and self.update == "int8":  # an int32 parameter, on the kernels' grid
            self.integer.append((b, "int32", _int32(b, scale.astype(np.float32))))
            return name
        if b.role == PARAM:
            out = self.graph.add(f"{name}_int32", b.shape, "int32")
            scales = self.const(f"{name}_int32_scale", scale.astype(np.float32))
            self.before.setdefault(id(node), []).append(Node("QuantizeBias", [name, scales], [out], {},
                                                             f"quantize {name}", TRAIN_DOMAIN))
            return out
        q = np.rint(b.value.astype(np.float64) / scale)
        return self.const(f"{name}_quantized", q.astype(np.int32), FROZEN) if np.abs(q).max(initial=0) < 2**31 else None

    def _runs(self, new: Node, gradient: bool) -> bool:
        """The int8 op exists, has a gradient rule if one must pass, and takes these operands
        (e.g. no int32 overflow); otherwise the layer stays float."""
        op = ops.REGISTRY.get((new.domain, new.op))
        if op is None or gradient and op.grad is None:
            return False
        try:
            ops.check_dtypes(new, self.graph)
            if op.check:
                op.check(new, self.graph)
        except McutrainError:
            return False
        return True

    def replace(self, node: Node, q: Node, op: str, inputs: list[str], domain: str = "", attrs=None,
                output: str | None = None) -> bool:
        """False, changing nothing, when `op` has no int8 kernel here. The new node writes q's
        output, or `output` (then the caller makes q's output from it)."""
        new = Node(op, inputs, [output or q.outputs[0]], dict(node.attrs if attrs is None else attrs), node.name,
                   domain)
        pending, self.integer = self.integer, []
        floats = [(t, t.dtype, t.value) for t, _, _ in pending]
        for t, dtype, value in pending:
            t.dtype, t.value = dtype, value
        if not self._runs(new, gradient=bool(self.carries_gradient.intersection(node.inputs))):
            for t, dtype, value in floats:
                t.dtype, t.value = dtype, value
            self.before.pop(id(node), None)
            return False
        self.replaced[id(node)] = new
        self.replaced[id(q)] = None
        return True




def _conv(lw: _Lowering, node: Node, q: Node) -> bool:
    x, w = lw.int8_input(node.inputs[0]), lw.frozen_weight(node.inputs[1])
    b = node.inputs[2] if len(node.inputs) > 2 else ""
    bias = lw.bias(node, b, x[1], w) if x is not None and w is not None else None
    return bias is not None and lw.replace(node, q, "QLinearConv", [*x, *lw.weight(w), *q.inputs[1:3], bias])


def _gemm(lw: _Lowering, node: Node, q: Node) -> bool:
    a = node.attrs
    x, w = lw.int8_input(node.inputs[0]), lw.frozen_weight(node.inputs[1])
    c = node.inputs[2] if len(node.inputs) > 2 else ""
    if x is None or w is None or a.get("transA", 0) or a.get("beta", 1.0) != 1.0 \
            or (c and len(lw.graph.shape(c)) != 1) \
            or w.quant.scale.size != 1 and w.quant.axis != (0 if a.get("transB", 0) else 1):
        return False
    bias = lw.bias(node, c, x[1], w)
    return bias is not None and lw.replace(node, q, "QGemm", [*x, *lw.weight(w), bias, *q.inputs[1:3]], MS,
                      {"transB": a.get("transB", 0), "alpha": a.get("alpha", 1.0)})


def _matmul(lw: _Lowering, node: Node, q: Node) -> bool:
    x, w = lw.int8_input(node.inputs[0]), lw.frozen_weight(node.inputs[1])
    if x is None or w is None or len(w.shape) != 2 or w.quant.scale.size != 1 and w.quant.axis != 1:
        return False
    return lw.replace(node, q, "QLinearMatMul", [*x, *lw.weight(w), *q.inputs[1:3]])


def _add(lw: _Lowering, node: Node, q: Node) -> bool:
    a, b = (lw.int8_input(i) for i in node.inputs)
    if a is None or b is None or lw.graph.shape(a[0]) != lw.graph.shape(b[0]):
        return False
    return lw.replace(node, q, "QLinearAdd", [*a, *b, *q.inputs[1:3]], MS, {})


def _global_average(lw: _Lowering, node: Node, q: Node) -> bool:
    x = lw.int8_input(node.inputs[0])
    if x is None:
        return False
    rank = len(lw.graph.shape(x[0]))
    if node.op == "ReduceMean":
        axes = lw.graph.tensors[node.inputs[1]].value if len(node.inputs) > 1 and node.inputs[1] else None
        if axes is None or sorted(int(a) % rank for a in axes) != list(range(2, rank)) \
                or node.attrs.get("keepdims", 1) == 0 and rank != 4:
            return False
    pooled, out = [1 if d >= 2 else s for d, s in enumerate(lw.graph.shape(x[0]))], q.outputs[0]
    if lw.graph.shape(out) == tuple(pooled):
        return lw.replace(node, q, "QLinearGlobalAveragePool", [*x, *q.inputs[1:3]], MS, {"channels_last": 0})
    mid = lw.graph.add(f"{out}_pooled", pooled, "int8")  # keepdims=0: pool, then a view drops the 1s
    if not lw.replace(node, q, "QLinearGlobalAveragePool", [*x, *q.inputs[1:3]], MS, {"channels_last": 0}, mid):
        del lw.graph.tensors[mid]
        return False
    shape = lw.const(f"{out}_shape", np.array(lw.graph.shape(out), np.int64))
    lw.replaced[id(q)] = Node("Reshape", [mid, shape], [out], {}, q.name)
    return True


def _concat(lw: _Lowering, node: Node, q: Node) -> bool:
    xs = [lw.int8_input(i) for i in node.inputs]
    return all(xs) and lw.replace(node, q, "QLinearConcat", [*q.inputs[1:3], *(t for x in xs for t in x)], MS)


def _same_scale(lw: _Lowering, node: Node, q: Node) -> bool:
    """Max pooling and views commute with quantization when input and output scales are equal."""
    x = lw.int8_input(node.inputs[0])
    if x is None or any(not np.array_equal(lw.graph.tensors[i].value, lw.graph.tensors[j].value)
                        for i, j in zip(x[1:], q.inputs[1:3])):
        return False
    return lw.replace(node, q, node.op, [x[0], *node.inputs[1:]])


LOWERINGS = {"Conv": _conv, "Gemm": _gemm, "MatMul": _matmul, "Add": _add, "GlobalAveragePool": _global_average,
             "ReduceMean": _global_average, "Concat": _concat, "MaxPool": _same_scale, "Reshape": _same_scale,
             "Flatten": _same_scale, "Squeeze": _same_scale, "Unsqueeze": _same_scale}


UPDATES = ("float", "int8")  # how trainable weights of quantized layers are stored and updated (--update)


def lower(graph: Graph, update: str = "float") -> None:
    """Run the frozen quantized layers in int8 (graph.nodes rewritten), and under update="int8"
    the trainable ones too; a no-op for float models."""
    if update not in UPDATES:
        raise OptionError(f"--update {update}: choose one of {', '.join(UPDATES)}")
    if not any(n.op in QDQ for n in graph.nodes):
        if update == "int8":
            raise OptionError("--update int8 trains the int8 weights of a quantized model, and this model has "
                              "no QuantizeLinear/DequantizeLinear: quantize it (--quantize int8 --calibration "
                              "FILE, or onnxruntime's quantize_static) or use --update float")
        return
    lw = _Lowering(graph, update)
    for node in graph.nodes:
        rule = LOWERINGS.get(node.op) if not node.domain else None
        q = lw.quantized_output(node) if rule else None
        if q is not None and id(q) not in lw.replaced:
            lw.integer = []
            rule(lw, node, q)
    if update == "int8":
        _check_integer(graph)
    lowered = [m for n in graph.nodes for m in (*lw.before.get(id(n), []), lw.replaced.get(id(n), n))]
    graph.nodes = [n for n in lowered if n is not None]
    _drop_unused(graph)

