"""Channel-sparse weight update (`--train-channels PATTERN:FRACTION`): the first
ceil(FRACTION x n) output channels of a layer's weight train (rounded up: at least one channel,
and 0.25 of 8 channels is 2 whatever float rounding says), the rest stays frozen. A grouped Conv
trains whole groups (the count rounded up to a multiple of the outputs per group; a depthwise Conv
has one, so any count), each part reading its groups' input channels through a Slice.

At compile time the layer is split in two: one node with the trainable slice (a parameter of its
own, named `W[:k]`, or `W[:, :k]` when the channels are the weight's dim 1) and one with the
frozen rest (const, flash), their outputs joined by a Concat along the output-channel axis. So the
weight gradient is computed for the trained channels only (no full dW), only the trainable node
keeps its input for the backward, and the parameter blob, get/set_params, the optimizer state and
federated deltas all see the slice; `export` joins it back into the full weight.

Under --update int8 a quantized layer splits into two int8 layers: both parts keep their share of
the weight's integers (per-channel scales sliced with them), each output is quantized as the
layer's was, and the join is a QLinearConcat at the same scale (an exact copy): the trained
channels are int8 parameters in RAM, the rest int8 constants in flash, all in integer arithmetic."""
from __future__ import annotations

import math
import re
from fnmatch import fnmatchcase

import numpy as np

from .errors import OptionError
from .ir import CONST, FROZEN, PARAM, Graph, Node, Quantized, Tensor

_SLICE = re.compile(r"^(?P<weight>.+)\[(?P<cols>:, )?(?::(?P<k>[0-9]+)|(?P<lo>[0-9]+):)\]$")


def parse(spec: str) -> tuple[str, float]:
    """'PATTERN:FRACTION' (split on the last ':') -> (pattern, fraction in (0, 1])."""
    pattern, sep, fraction = spec.rpartition(":")
    try:
        value = float(fraction)
    except ValueError:
        value = None
    if not sep or not pattern or value is None:
        raise OptionError(f"--train-channels '{spec}': expected PATTERN:FRACTION, e.g. 'features.16.*:0.25'")
    if not 0 < value <= 1:
        raise OptionError(f"--train-channels '{spec}': the fraction must be in (0, 1], not {fraction}")
    return pattern, value


def weights(graph: Graph) -> dict[str, tuple[Node, int]]:
    """The weights whose output channels can train apart -> (their layer, the channel axis of the
    weight): Conv's dim 0 (any group), Gemm's output dim (per transB), a 2-D MatMul weight's last dim."""
    found = {}
    for node in graph.nodes:
        w = graph.tensors.get(node.inputs[1]) if len(node.inputs) > 1 else None
        if w is None or w.role != PARAM:
            continue
        if node.op == "Conv":
            found.setdefault(w.name, (node, 0))
        elif node.op == "Gemm":
            found.setdefault(w.name, (node, 0 if node.attrs.get("transB", 0) else 1))
        elif node.op == "MatMul" and len(w.shape) == 2:
            found.setdefault(w.name, (node, 1))
    return found


def select(graph: Graph, specs: list[str]) -> dict[str, str]:
    """{weight: its trainable slice's name (the weight's own when all channels train)} for the
    --train-channels values; a weight several patterns match trains the largest fraction."""
    eligible = weights(graph)
    chosen: dict[str, int] = {}
    for spec in specs:
        pattern, fraction = parse(spec)
        hits = [w for w in eligible if fnmatchcase(w, pattern)]
        if not hits:
            raise OptionError(f"--train-channels '{spec}': '{pattern}' matches no Conv, Gemm or 2-D "
                              f"MatMul weight; those are: {', '.join(eligible) or 'none'}")
        for w in hits:
            n = graph.shape(w)[eligible[w][1]]
            groups = eligible[w][0].attrs.get("group", 1)
            per_group = n // groups if groups > 1 else 1
            chosen[w] = max(chosen.get(w, 0), per_group * math.ceil(math.ceil(fraction * n - 1e-9) / per_group))
            readers = [node for node in graph.nodes if w in node.inputs]
            if len(readers) > 1:
                raise OptionError(f"--train-channels '{spec}': '{w}' is read by {len(readers)} nodes; give "
                                  "each its own copy (--untie) to train some of its channels")
    return {w: w if k == graph.shape(w)[eligible[w][1]] else slice_name(w, k, eligible[w][1])
            for w, k in chosen.items()}


def slice_name(weight: str, k: int, axis: int) -> str:
    return f"{weight}[{':, ' * axis}:{k}]"


def sliced(name: str) -> tuple[str, int, int] | None:
    """(weight, channel axis, k) if `name` is a trainable slice W[:k], else None."""
    m = _SLICE.match(name)
    return (m["weight"], 1 if m["cols"] else 0, int(m["k"])) if m and m["k"] else None


def part(name: str) -> tuple[str, tuple] | None:
    """(tensor, index) if `name` is a trainable part of a tensor: a slice W[:k] (W[:, :k]), or
    under --update int8 the rest b[k:] of a trainable bias split with its layer."""
    m = _SLICE.match(name)
    if m is None:
        return None
    axis = (slice(None),) if m["cols"] else ()
    return m["weight"], axis + ((slice(0, int(m["k"])),) if m["k"] else (slice(int(m["lo"]), None),))


def split(graph: Graph, trainable: list[str], update: str = "float") -> None:
    """Rewrite the layer of every slice in `trainable` into a trainable and a frozen part (under
    update "int8" two quantized parts, see above)."""
    layers = weights(graph)
    for name in list(trainable):  # _split may replace a bias in `trainable` by its two parts
        if (s := sliced(name)) is not None and s[0] in layers:
            _split(graph, *layers[s[0]], s[2], name, trainable, update == "int8")


def _quant_part(q: Quantized | None, axis: int, lo: int, hi: int) -> Quantized | None:
    """The integers of channels lo:hi of a quantized weight (None: that part runs in float)."""
    if q is None or q.scale.size != 1 and q.axis != axis:
        return None
    part = (slice(None),) * axis + (slice(lo, hi),)
    scale, zp = (q.scale, q.zero_point) if q.scale.size == 1 else (q.scale[lo:hi], q.zero_point[lo:hi])
    return Quantized(np.ascontiguousarray(q.values[part]), scale, zp, q.axis)


def _requantized(graph: Graph, y: str, out: str, join: Node) -> str:
    """out -> QuantizeLinear -> DequantizeLinear (before `join`) at the scale of the QuantizeLinear
    that reads y, so the lowering runs the part in int8; out itself when y has no such reader."""
    readers = [n for n in graph.nodes if y in n.inputs]
    if len(readers) != 1 or readers[0].op != "QuantizeLinear" or readers[0].domain:
        return out
    scale = readers[0].inputs[1:3]
    q = graph.add(f"{out}.quantized", graph.shape(out), graph.tensors[readers[0].outputs[0]].dtype)
    f = graph.add(f"{out}.dequantized", graph.shape(out))
    at = graph.nodes.index(join)
    graph.nodes[at:at] = [Node("QuantizeLinear", [out, *scale], [q], {}, f"quantize {out}"),
                          Node("DequantizeLinear", [q, *scale], [f], {}, f"dequantize {out}")]
    return f


def _split(graph: Graph, node: Node, axis: int, k: int, name: str, trainable: list[str], integer: bool) -> None:
    w = graph.tensors[node.inputs[1]]
    value = np.asarray(w.value, np.float32)
    head, rest = np.split(value, [k], axis=axis)
    quant = (_quant_part(w.quant, axis, 0, k), _quant_part(w.quant, axis, k, value.shape[axis])) if integer \
        else (None, None)
    head = Tensor(name, head.shape, w.dtype, PARAM, np.ascontiguousarray(head), quant=quant[0])
    graph.tensors = {name if t is w else t.name: head if t is w else t for t in graph.tensors.values()}
    frozen = graph.add(f"{w.name}[{':, ' * axis}{k}:]", rest.shape, w.dtype, FROZEN, np.ascontiguousarray(rest))
    graph.tensors[frozen].quant = quant[1]
    y = node.outputs[0]
    out_axis = len(graph.shape(y)) - 1 if node.op != "Conv" else 1
    groups, n = node.attrs.get("group", 1), value.shape[axis]
    biases = _split_bias(graph, node, k, n, trainable) if integer else None
    parts = []
    for weight, lo, hi, what in ((name, 0, k, "trained"), (frozen, k, n, "frozen")):
        shape = list(graph.shape(y))
        shape[out_axis] = hi - lo
        attrs = dict(node.attrs)
        x = node.inputs[0]
        if groups > 1:  # whole groups: the part reads its groups' input channels
            attrs["group"] = groups * (hi - lo) // n
            x = _channels(graph, node, x, lo * value.shape[1] * groups // n, hi * value.shape[1] * groups // n)
        inputs = [x, weight, *(biases[lo > 0] if biases else _bias_part(graph, node, b, lo, hi, trainable)
                               for b in node.inputs[2:3])]
        out = graph.add(f"{y}.{what}", shape)
        parts.append(Node(node.op, inputs, [out], attrs, f"{node.name or y} ({what} channels)", node.domain))
    at = graph.nodes.index(node)
    join = Node("Concat", [p.outputs[0] for p in parts], [y], {"axis": out_axis}, f"{node.name or y} (channels joined)")
    graph.nodes[at:at + 1] = [*parts, join]
    if all(quant):
        join.inputs = [_requantized(graph, y, p.outputs[0], join) for p in parts]
    for bias in node.inputs[2:3]:  # a frozen bias is now two constants, unless another node reads it
        if bias and not any(bias in n.inputs for n in graph.nodes):
            del graph.tensors[bias]


def _split_bias(graph: Graph, node: Node, k: int, n: int, trainable: list[str]) -> tuple[str, str] | None:
    """Under --update int8 a trainable bias with a value per channel becomes two parameters, b[:k]
    and b[k:] (in `trainable` in its place), each part's int32 bias read directly by its int8
    layer; `export` joins them back."""
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    t = graph.tensors.get(bias)
    if t is None or bias not in trainable or t.shape != (n,):
        return None
    names = []
    for name, lo, hi in ((f"{bias}[:{k}]", 0, k), (f"{bias}[{k}:]", k, n)):
        names.append(graph.add(name, (hi - lo,), t.dtype, PARAM, np.ascontiguousarray(t.value[lo:hi])))
        graph.tensors[names[-1]].quant = _quant_part(t.quant, 0, lo, hi)
    at = trainable.index(bias)
    trainable[at:at + 1] = names
    return names[0], names[1]


def _bias_part(graph: Graph, node: Node, bias: str, lo: int, hi: int, trainable: list[str]) -> str:
    """The bias channels lo:hi: a frozen bias is split into constants; a trainable one (or a Gemm C
    broadcast along the channels) is read by both parts, through a Slice when it has channels."""
    t = graph.tensors[bias] if bias else None
    if t is None or t.shape[-1:] in ((), (1,)):
        return bias
    if bias not in trainable:
        return graph.add(f"{bias}[..., {lo}:{hi}]", t.shape[:-1] + (hi - lo,), t.dtype, FROZEN,
                         np.ascontiguousarray(t.value[..., lo:hi]))
    return _slice(graph, node, bias, -1, lo, hi, f"{bias}[..., {lo}:{hi}]")


def _channels(graph: Graph, node: Node, x: str, lo: int, hi: int) -> str:
    """The input channels lo:hi of a grouped Conv part."""
    return _slice(graph, node, x, 1, lo, hi, f"{x}[:, {lo}:{hi}]")


def _slice(graph: Graph, node: Node, name: str, axis: int, lo: int, hi: int, out: str) -> str:
    """A Slice of `name` along `axis`, inserted before `node`."""
    shape = list(graph.shape(name))
    shape[axis] = hi - lo
    ints = [graph.add(f"{name}.slice.{what}", (1,), "int64", CONST, np.array([v], np.int64))
            for what, v in (("start", lo), ("end", hi), ("axis", axis))]
    out = graph.add(out, tuple(shape))
    graph.nodes.insert(graph.nodes.index(node), Node("Slice", [name, *ints], [out], {}, f"{name} channels {lo}:{hi}"))
    return out


def join(params: dict[str, np.ndarray], full: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`params` with every trainable slice written into a copy of its full weight (`full`)."""
    joined = {}
    for name, value in params.items():
        if (s := part(name)) is None or name in full:  # a model's own tensor may be called 'x[:2]'
            joined[name] = value
            continue
        weight, index = s
        whole = np.array(joined.get(weight, full[weight]), value.dtype)  # float32, or the integers of --update int8
        whole[index] = value
        joined[weight] = whole
    return joined


def initial(name: str, full: dict[str, np.ndarray]) -> np.ndarray:
    """The compiled-in value of parameter `name` (a slice of its weight, or the tensor itself)."""
    if (s := part(name)) is None or name in full:
        return full[name]
    weight, index = s
    return full[weight][index]
