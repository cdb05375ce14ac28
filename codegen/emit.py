"""Stage 4: C emission. Renders <name>.h / <name>.c from Jinja2 templates; each node becomes one
kernel call produced by its op's emit rule. The generated code uses only static buffers."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from . import __version__, c_api, ops
from .ctext import ENV, WEIGHTS, comment, identifiers
from .errors import UnsupportedError
from .blob import HEADER, delta_bytes, word_bits
from .ir import ACT, CONST, FROZEN, INPUT, LABEL, PARAM, RUNNING, STATE, Graph
from .manifest import words
from .memory import MemoryPlan
from .training import TrainingGraph

# C element type of each dtype a tensor's data can have in the generated code.
CTYPES = {"float32": "float", "int32": "int32_t", "int8": "int8_t", "bit": "uint8_t"}


def input_idents(names) -> dict[str, str]:
    """The C identifier of each model input's pointer argument (in_<sanitised, unique name>)."""
    return {n: f"in_{ident}" for n, ident in identifiers(names).items()}


def c_float(x: float) -> str:
    x = float(np.float32(x))
    if np.isnan(x):
        return "NAN"
    if np.isinf(x):
        return "INFINITY" if x > 0 else "(-INFINITY)"
    s = "%.9g" % x
    return (s if any(ch in s for ch in ".e") else s + ".0") + "f"


# Blobs with at least this many bytes of initial values are not written as C literals (about 16
# bytes of source per float, slow to compile) but as a binary file the assembler embeds (.incbin)
# where the compiler is GNU-compatible and targets little-endian ELF, hex words elsewhere.
EMBED_BYTES = 1 << 20


@dataclass
class Blob:
    """Tensors of one role packed into one C array of floats; offsets in 4-byte words."""
    c_name: str
    names: list[str]
    offsets: dict[str, int]
    size: int
    integer: bool = False  # holds the bytes of integer tensors (written as hex words, not floats)

    @classmethod
    def pack(cls, c_name: str, graph: Graph, names: list[str]) -> "Blob":
        offsets, size = {}, 0
        for n in names:
            offsets[n] = size
            size += words(graph.tensors[n].dtype, graph.tensors[n].size)
        return cls(c_name, names, offsets, size, any(graph.tensors[n].dtype != "float32" for n in names))

    def initial(self, graph: Graph) -> np.ndarray | None:
        """Initial values, flat; None for all-zero blobs (static storage starts zeroed)."""
        if not self.names or not any(np.any(graph.tensors[n].value) for n in self.names):
            return None
        return np.concatenate([word_bits(graph.tensors[n].dtype, graph.tensors[n].value).ravel()
                               for n in self.names])


def hex_words(values: np.ndarray) -> bytes:
    """`0x3f800000u, ` per float, eight to a line: the bits themselves, so -0.0, subnormals and
    NaN payloads survive. Numbers only, formatted here: no text from the model reaches it."""
    digits = np.frombuffer(values.astype(">f4").tobytes().hex().encode(), np.uint8).reshape(-1, 8)
    words = np.empty((len(digits), 13), np.uint8)
    words[:, :2] = np.frombuffer(b"0x", np.uint8)
    words[:, 2:10] = digits
    words[:, 10:] = np.frombuffer(b"u, ", np.uint8)
    words[7::8, 12] = ord("\n")
    return words.tobytes() + b"\n"


def storage(prefix: str, blob: Blob, graph: Graph) -> tuple[dict, dict[str, bytes]]:
    """How the template declares a blob, and the data files that hold its values if it is large:
    <prefix>_<blob>.bin (little-endian floats) for .incbin, <prefix>_<blob>.inc (hex words)."""
    values = blob.initial(graph)
    fields = {"c": blob.c_name, "size": blob.size, "values": [], "file": None, "words": None}
    if values is None:
        return fields, {}
    if values.nbytes < EMBED_BYTES:
        if blob.integer:  # bit patterns that are no float literal (NaN payloads): the words themselves
            return {**fields, "words": hex_words(values).decode()}, {}
        return {**fields, "values": [c_float(v) for v in values]}, {}
    stem, raw = f"{prefix}_{blob.c_name}", values.astype("<f4").tobytes()
    fields.update(file=stem, sha256=hashlib.sha256(raw).hexdigest())
    return fields, {f"{stem}.bin": raw, f"{stem}.inc": hex_words(values)}


def incbin(symbol: str, const: bool, blob: dict) -> str:
    """Assembler text that defines `symbol` as the blob's .bin file: read-only (flash) for const
    data, writable (RAM, its initial values in flash) for the rest. Hidden: not exported from a
    shared library. The file's digest, in an assembler comment, makes the compiled text change
    with the values: make, CMake and ccache do not track .incbin files."""
    section = f'.rodata.{symbol},"a"' if const else f'.data.{symbol},"aw"'
    return "\n".join([f"/* {blob['file']}.bin SHA-256 {blob['sha256']} */", f".pushsection {section}",
                      ".balign 16", f".globl {symbol}", f".hidden {symbol}", f".type {symbol},%object",
                      f".size {symbol},{4 * blob['size']}", f"{symbol}:", f'.incbin "{blob["file"]}.bin"',
                      ".popsection"])


class EmitContext:
    """What an op's emit rule sees: C expressions for tensors, their shapes, static int arrays."""

    def __init__(self, tg: TrainingGraph, plan: MemoryPlan, prefix: str, blobs: dict[str, Blob], federated: bool):
        self.tg, self.plan, self.prefix, self.blobs = tg, plan, prefix, blobs
        self.arrays: list[tuple[str, list[int]]] = []
        self.lr = f"{prefix}_lr"
        self.step = f"{prefix}_steps"  # completed training steps, counting this one
        self.micro = "mt_micro"  # index of the micro-batch within the step (0 without accumulation)
        self.rng = f"&{prefix}_rng"  # the state of the Dropout stream (<prefix>_set_seed)
        self.prox_mu = f"{prefix}_prox_mu" if federated else None  # FedProx's mu (<prefix>_set_prox_mu)
        self.f = c_float
        self.inputs = input_idents(tg.graph.inputs)
        self.used: set[str] = set()  # the tensors whose data some statement reads or writes
        self.node = None  # the node whose statement is being emitted

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tg.graph.shape(name)

    def size(self, name: str) -> int:
        return self.tg.graph.tensors[name].size

    def ptr(self, name: str) -> str:
        root = self.plan.root(name)
        self.used.add(root)
        t = self.tg.graph.tensors[root]
        if t.role == ACT:
            at = f"{self.prefix}_arena + {self.plan.buffers[root].offset // 4}"  # offsets are 16-aligned
            return f"(({CTYPES[t.dtype]} *)({at}))" if t.dtype != "float32" else f"({at})"
        if t.role == INPUT:
            return self.inputs[root]
        if t.role == LABEL:
            return "labels"
        if t.dtype in CTYPES and t.dtype != "float32" and t.role in (CONST, FROZEN) and ops.lookup(self.node).int8:
            return self.ints(t.value.ravel(), CTYPES[t.dtype], WEIGHTS if t.role == FROZEN else "i")
        blob = self.blobs[t.role]
        if t.dtype != "float32" and t.role == PARAM:  # trains on its integers: its bytes in the blob
            return f"(({CTYPES[t.dtype]} *)({self.prefix}_{blob.c_name} + {blob.offsets[root]}))"
        if t.dtype != "float32":
            raise UnsupportedError(f"{self.node.describe()}: tensor '{root}' ({t.dtype}) is read as data; "
                                   f"{self.node.op} takes float32 tensors there")
        return f"({self.prefix}_{blob.c_name} + {blob.offsets[root]})"

    def round_start(self, name: str) -> str:
        """A parameter's copy at the start of the federated round (<prefix>_fl_begin_round), for
        code that runs only when <prefix>_prox_mu != 0."""
        return f"({self.prefix}_prox_round + {self.blobs[PARAM].offsets[self.plan.root(name)]})"

    def value(self, name: str) -> np.ndarray:
        """A constant's value, read at compile time (a scale, a zero point)."""
        return self.tg.graph.tensors[name].value

    def ints(self, values, ctype: str = "int32_t", stem: str = "i") -> str:
        """A static const array of these integers (one per distinct content and type), named
        <prefix>_<stem><k>: stem WEIGHTS for frozen quantized weights (`mcutrain size` counts them)."""
        return self._array(ctype, [str(int(v)) for v in values], stem)

    def floats(self, values) -> str:
        """A static const float array (a per-channel scale read by a kernel)."""
        return self._array("float", [c_float(v) for v in values])

    def _array(self, ctype: str, texts: list[str], stem: str = "i") -> str:
        for name, kind, existing in self.arrays:
            if (kind, existing) == (ctype, texts):
                return name
        name = f"{self.prefix}_{stem}{len(self.arrays)}"
        self.arrays.append((name, ctype, texts))
        return name


def _statement(node, ctx: EmitContext, updates: dict, predict: bool = False) -> dict:
    """updates: fused gradient -> the optimizer node that consumes it. predict: the node's form
    in predict (OpDef.emit_predict), where it has one."""
    op = ops.lookup(node)
    ctx.node = node
    if predict and op.emit_predict:
        code = op.emit_predict(node, ctx)
    elif node.outputs[0] in updates:  # accumulates the gradient into the optimizer's target
        upd = updates[node.outputs[0]]
        scale, keep, _ = ops.lookup(upd).emit_fused(upd, ctx)
        code = op.emit_update(node, ctx, scale, keep)
    elif len(node.inputs) > 1 and updates.get(node.inputs[1]) is node:
        code = op.emit_fused(node, ctx)[2]  # the rest of the update, if any
    else:
        code = op.emit(node, ctx) if op.emit else None
    return {"comment": comment(f"{node.op} '{node.name}': {', '.join(i for i in node.inputs if i)} -> "
                               f"{', '.join(node.outputs)}"), "code": code}


def running_names(graph: Graph) -> list[str]:
    """The running statistics in the order of the blob's state section."""
    return [t.name for t in graph.of_role(RUNNING)]


def _referenced(graph: Graph, role: str, nodes) -> list[str]:
    used = {i for n in nodes for i in n.inputs}
    return [t.name for t in graph.tensors.values() if t.role == role and t.name in used
            and t.dtype == "float32"]


def _statements(tg: TrainingGraph, plan: MemoryPlan, prefix: str, blobs: dict[str, Blob], federated: bool):
    """(context, [forward, loss, backward, updates, predict] statements) of the whole schedule;
    predict is None when it runs the training forward as it is."""
    nodes = tg.graph.nodes
    ctx = EmitContext(tg, plan, prefix, blobs, federated)
    fused = {n.inputs[1]: n for n in nodes if len(n.inputs) > 1 and n.inputs[1] in tg.fused}
    parts = [[_statement(n, ctx, fused) for n in part] for part in (
        nodes[:tg.n_forward], [nodes[tg.n_forward]], nodes[tg.n_forward + 1:tg.n_updates_from],
        nodes[tg.n_updates_from:])]
    forward = nodes[:tg.n_forward]
    differs = any(ops.lookup(n).emit_predict for n in forward)
    return ctx, parts + [[_statement(n, ctx, fused, predict=True) for n in forward] if differs else None]


def _constants(tg: TrainingGraph, plan: MemoryPlan, prefix: str, blobs: dict[str, Blob], federated: bool):
    """Emit the schedule; again without the const data no statement read (a Dropout's ratio, a
    view's shape), so the C defines nothing unused (-Wall -Werror: 'defined but not used')."""
    ctx, parts = _statements(tg, plan, prefix, blobs, federated)
    kept = {role: Blob.pack(blobs[role].c_name, tg.graph, [n for n in blobs[role].names if n in ctx.used])
            for role in (FROZEN, CONST)}
    if all(kept[role].names == blobs[role].names for role in kept):
        return blobs, ctx, parts
    blobs = {**blobs, **kept}
    return (blobs, *_statements(tg, plan, prefix, blobs, federated))


def _integer_delta(tg: TrainingGraph, blobs: dict[str, Blob], prefix: str, federated: bool) -> dict:
    """The MTDI delta of a federated model with integer parameters (--update int8): one call per
    tensor of the blob (runtime/kernels/blob.h), and its size in bytes."""
    graph = tg.graph
    if not federated or all(graph.tensors[n].dtype == "float32" for n in tg.trainable):
        return {"delta_parts": [], "delta_int_bytes": 0}
    parts, size = [], HEADER.size + 4  # the header, then the samples count
    for role, now, start in ((PARAM, "params", "round_start"), (RUNNING, "running", "round_state")):
        for name in blobs[role].names:
            t, at = graph.tensors[name], blobs[role].offsets[name]
            ctype = CTYPES[t.dtype]
            cur, old = (f"{prefix}_{b} + {at}" for b in (now, start))
            if t.dtype != "float32":
                cur, old = f"(const {ctype} *)({cur})", f"(const {ctype} *)({old})"
            kind = {"float32": "f32", "int8": "s8", "int32": "s32"}[t.dtype]
            parts.append(f"mt_delta_{kind}({cur}, {old}, {t.size}u, p)")
            size += delta_bytes(t.dtype, t.size)
    return {"delta_parts": parts, "delta_int_bytes": size}


def emit(tg: TrainingGraph, plan: MemoryPlan, prefix: str, banner: str, model_hash: int,
         federated: bool) -> dict[str, str | bytes]:
    """Return {filename: text or bytes}: the generated header and source, and data files."""
    graph = tg.graph
    nodes = graph.nodes
    blobs = {PARAM: Blob.pack("params", graph, [n for n in tg.trainable]),
             FROZEN: Blob.pack("frozen", graph, _referenced(graph, FROZEN, nodes)),
             CONST: Blob.pack("consts", graph, _referenced(graph, CONST, nodes)),
             STATE: Blob.pack("state", graph, [t.name for t in graph.of_role(STATE)]),
             RUNNING: Blob.pack("running", graph, running_names(graph))}
    blobs, ctx, (forward, loss, backward, updates, predict) = _constants(tg, plan, prefix, blobs, federated)
    loss = loss[0]
    stored = {role: storage(prefix, b, graph) for role, b in blobs.items()}
    kernels = sorted({op.kernel for op in map(ops.lookup, nodes) if op.kernel})
    label = graph.tensors[tg.label]
    out = graph.tensors[tg.output]
    info = {
        "prefix": prefix, "PREFIX": prefix.upper(), "banner": comment(banner), "version": __version__,
        "batch": graph.shape(graph.inputs[0])[0] if graph.shape(graph.inputs[0]) else 1,
        "inputs": [{"c": c, "name": comment(n), "shape": graph.shape(n), "size": graph.tensors[n].size,
                    "DEFINE": c[3:].upper()} for n, c in ctx.inputs.items()],
        "output": {"name": comment(out.name), "shape": out.shape, "size": out.size, "ptr": ctx.ptr(out.name)},
        "label": {"ctype": "int32_t" if label.dtype == "int32" else "float", "shape": label.shape,
                  "size": label.size, "classes": out.shape[1] if label.dtype == "int32" else 0},
        "params": [{"name": comment(n), "offset": blobs[PARAM].offsets[n], "shape": graph.shape(n),
                    "size": words(graph.tensors[n].dtype, graph.tensors[n].size),
                    "dtype": "" if graph.tensors[n].dtype == "float32" else f" {graph.tensors[n].dtype}"}
                   for n in tg.trainable],
        "model_hash": f"0x{model_hash:08X}u", "federated": federated,
        "blobs": {role: fields for role, (fields, _) in stored.items()}, "incbin": incbin,
        "arena_floats": max(plan.arena_bytes // 4, 1), "arena_bytes": plan.arena_bytes,
        "lr": c_float(tg.optimizer.lr), "loss_ptr": ctx.ptr(tg.loss),
        "kernels": kernels, "forward": forward, "loss": loss, "backward": backward, "updates": updates,
        "predict": predict, "running": [{"name": comment(n), "offset": blobs[RUNNING].offsets[n], "shape": graph.shape(n),
                                         "size": graph.tensors[n].size} for n in blobs[RUNNING].names],
        "functions": c_api.declarations(prefix, list(ctx.inputs.values()), federated),
        "status": [(code, c_api.STATUS_NAMES[code], what) for code, what in c_api.STATUS.items()],
        "accumulate": tg.accumulate, "micro": ctx.micro, "arrays": ctx.arrays,
        **_integer_delta(tg, blobs, prefix, federated),
    }
    return {f"{prefix}.h": ENV.get_template("model.h.j2").render(**info),
            f"{prefix}.c": ENV.get_template("model.c.j2").render(**info),
            **{name: data for _, files in stored.values() for name, data in files.items()}}
