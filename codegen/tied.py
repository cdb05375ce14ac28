"""Parameters read by several nodes. torch's exporters merge initializers of equal value (a fresh
model's zero biases and unit LayerNorm scales become one tensor, read directly or through
Identity nodes), and the compiler then trains them as one tensor where PyTorch trains several.
ONNX cannot tell this from deliberate sharing, so `generate` warns, naming every group, and
`untie` gives each use its own copy: an Identity's output becomes a parameter of that name (the
name PyTorch gave it), a later direct use gets `<name>_<k>`. The untied model is what the build
folder keeps, so `export` writes the untied graph."""
from __future__ import annotations

import contextlib
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, NamedTuple

import onnx
from onnx import helper

from . import loader, ops
from .ir import fresh
from .errors import McutrainWarning


class Use(NamedTuple):
    node: onnx.NodeProto  # a node other than Identity
    slot: int
    name: str  # the name it reads: the initializer's, or an Identity output's


def _differentiable(node: onnx.NodeProto, slot: int) -> bool:
    op = ops.REGISTRY.get((node.domain if node.domain != "ai.onnx" else "", node.op_type))
    return op is not None and slot in op.diff_inputs


def groups(model: onnx.ModelProto) -> dict[str, list[Use]]:
    """Float initializers (rank >= 1) read in several places (nodes or slots of one node, e.g. a
    fresh BatchNorm's zero bias and running mean), through Identity chains, at least one of them
    in a slot gradients flow into (a parameter): name -> its uses, in graph order."""
    root = {i.name: i.name for i in model.graph.initializer
            if i.dims and helper.tensor_dtype_to_np_dtype(i.data_type).kind == "f"}
    uses: dict[str, list[Use]] = {}
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in root:
            root[node.output[0]] = root[node.input[0]]
            continue
        for slot, name in enumerate(node.input):
            if name in root:
                uses.setdefault(root[name], []).append(Use(node, slot, name))
    return {name: seen for name, seen in uses.items()
            if len(seen) > 1 and any(_differentiable(u.node, u.slot) for u in seen)}


def _describe(name: str, seen: list[Use]) -> str:
    reads = [f"{u.node.name or u.node.output[0]}" + (f" as '{u.name}'" if u.name != name else "") for u in seen]
    return f"'{name}' ({len(seen)} uses: {', '.join(reads)})"


def warn(found: dict[str, list[Use]]) -> None:
    """One warning naming every group."""
    warnings.warn(f"{len(found)} parameter(s) are read by several nodes and train as one tensor: "
                  f"{'; '.join(_describe(n, s) for n, s in found.items())}. torch's exporters merge "
                  "initializers of equal value (e.g. a freshly initialised model's zero biases); "
                  "generate with --untie (untie=True) to train each use separately", McutrainWarning, stacklevel=3)


def untie(model: onnx.ModelProto, found: dict[str, list[Use]]) -> None:
    """Give every use after the first of each group its own copy of the initializer (in place)."""
    taken = {n for node in model.graph.node for n in [*node.input, *node.output]}
    taken |= {i.name for i in model.graph.initializer} | {i.name for i in model.graph.input}
    inits = {i.name: i for i in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    for name, seen in found.items():
        for k, use in enumerate(seen[1:], 1):
            own = use.name != name and use.name not in outputs and [u.name for u in seen].count(use.name) == 1
            copy = use.name if own else fresh(f"{name}_{k}", taken, "_")
            taken.add(copy)
            if copy not in inits:
                inits[copy] = model.graph.initializer.add()
                inits[copy].CopyFrom(inits[name])
                inits[copy].name = copy
            use.node.input[use.slot] = copy
    _drop_unread(model, outputs)


def _drop_unread(model: onnx.ModelProto, outputs: set[str]) -> None:
    """Identity nodes whose outputs became initializers or are read no more, and initializers
    nothing reads (a merged tensor all of whose uses went through Identities)."""
    inits = {i.name for i in model.graph.initializer}
    while True:
        read = {n for node in model.graph.node for n in node.input} | outputs
        dead = [node for node in model.graph.node if node.op_type == "Identity"
                and (node.output[0] in inits or node.output[0] not in read)]
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
    unread = [i for i in model.graph.initializer if i.name not in read]
    for init in unread:
        model.graph.initializer.remove(init)


@contextlib.contextmanager
def resolved(path: Path, untie_them: bool) -> Iterator[Path]:
    """The model file to compile: `path` itself (with a warning naming the tied groups unless
    there are none), or with untie_them a temporary file of the untied model while the block runs."""
    model = loader.read(path)
    found = groups(model)
    if not found or not untie_them:
        if found:
            warn(found)
        yield path
        return
    untie(model, found)
    with tempfile.TemporaryDirectory() as tmp:
        untied = Path(tmp) / path.name
        onnx.save(model, str(untied))
        yield untied
