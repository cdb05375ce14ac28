"""Stage 2: the training graph. Forward (pruned to the loss output) + loss + backward + one
optimizer update per trainable parameter, scheduled as soon as it is safe."""
from __future__ import annotations

from dataclasses import dataclass, fields
from fnmatch import fnmatchcase

import numpy as np

from . import channels, ops, quantized
from .autodiff import backward, requires_grad
from .errors import OptionError
from .ir import FROZEN, LABEL, PARAM, STATE, TRAIN_DOMAIN, Graph, Node

UPDATED = "updated"  # role of an optimizer output: the new value, written in place of its input


OPTIMIZERS = ops.OPTIMIZERS  # registered by their op modules (codegen/ops/sgd.py, adam.py)


@dataclass
class Optimizer:
    """The update rule and its hyperparameters, with PyTorch's semantics (torch.optim.SGD / Adam /
    AdamW). The defaults here are the defaults everywhere (API, CLI)."""
    lr: float = 0.01
    momentum: float = 0.0  # SGD only
    weight_decay: float = 0.0  # L2 for sgd/adam, decoupled for adamw
    nesterov: bool = False  # SGD only
    kind: str = "sgd"
    beta1: float = 0.9  # Adam only
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self):
        if self.kind not in OPTIMIZERS:
            raise OptionError(f"unknown optimizer '{self.kind}'; choose one of: {', '.join(OPTIMIZERS)}")
        if self.lr <= 0 or self.momentum < 0 or self.weight_decay < 0 or self.eps <= 0:
            raise OptionError("lr and eps must be > 0, momentum and weight_decay >= 0")
        if self.nesterov and self.momentum == 0:
            raise OptionError("nesterov needs momentum > 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise OptionError("beta1 and beta2 must be in [0, 1)")
        uses = self.definition.hyperparameters
        foreign = [f.name for f in fields(self) if f.name not in ("lr", "kind", *uses)
                   and getattr(self, f.name) != f.default]
        if foreign:
            raise OptionError(f"{', '.join(foreign)}: not an option of {self.kind} (it takes lr, {', '.join(uses)})")

    @property
    def definition(self) -> ops.OptimizerDef:
        return OPTIMIZERS[self.kind]

    def state(self) -> list[str]:
        """Per-parameter state tensors the update keeps between steps."""
        return self.definition.state(self)

    def node(self, param: str, grad: str, state: list[str], outputs: list[str]) -> Node:
        d = self.definition
        return Node(d.op, [param, grad, *state], outputs, {"lr": self.lr, **d.attrs(self)}, f"update {param}",
                    TRAIN_DOMAIN)


@dataclass
class TrainingGraph:
    graph: Graph  # all nodes in schedule order
    n_forward: int  # graph.nodes[:n_forward] is the forward pass (what predict runs)
    output: str  # the model output the loss is attached to
    loss: str  # scalar loss tensor
    label: str
    loss_name: str
    optimizer: Optimizer
    trainable: list[str]  # parameter blob order
    frozen: list[str]
    # Gradient tensor -> parameter: the gradient's producer applies the SGD update directly to
    # the parameter, so the gradient never needs a buffer (SGD without momentum).
    fused: dict[str, str]
    accumulate: int = 1  # micro-batches per step; > 1: graph.nodes[n_updates_from:] run once after them
    n_updates_from: int = 0


@dataclass
class Selection:
    """Which parameters train (../shared/DECISIONS.md section 1). The narrowing criteria (train,
    last, bias_only) intersect to a base set (everything when none is given); the adding ones
    (bias_last, channels) join it, on an empty base when they come alone; `freeze` then removes."""
    train: str | list[str] | None = None  # glob patterns on parameter names
    freeze: str | list[str] | None = None
    last: int | None = None  # only the parameters of the last N parameterised layers
    bias_only: bool = False  # only biases (1-D parameters added to a layer's output)
    bias_last: int | None = None  # adding: the biases of the last N layers that have one
    channels: str | list[str] | None = None  # adding: "PATTERN:FRACTION", first channels of weights (channels.py)

    def __post_init__(self):
        """One pattern may be a plain string (train="fc2.*"): a string is a sequence too, and
        would otherwise be matched one character at a time."""
        for name in ("train", "freeze", "channels"):
            if isinstance(getattr(self, name), str):
                setattr(self, name, [getattr(self, name)])


def _layers(graph: Graph) -> list[list[str]]:
    """Parameters grouped by the forward node that consumes them, in graph order."""
    layers, seen = [], set()
    for node in graph.nodes:
        names = [i for i in node.inputs if i in graph.tensors and graph.tensors[i].role == PARAM and i not in seen]
        if names:
            layers.append(names)
            seen.update(names)
    return layers


def _biases(graph: Graph) -> list[str]:
    """Bias parameters in the order of the layers that add them."""
    found = []
    for node in graph.nodes:
        for slot in ops.lookup(node).bias_inputs:
            t = graph.tensors.get(node.inputs[slot]) if slot < len(node.inputs) else None
            # a recurrent layer's B is (directions, 2 * gates * hidden)
            if t is not None and t.role == PARAM and (len(t.shape) == 1 or node.op in ("GRU", "LSTM", "RNN")) \
                    and t.name not in found:
                found.append(t.name)
    return found


def select_trainable(graph: Graph, sel: Selection) -> list[str]:
    """The trainable parameters in blob order; a weight training some of its channels appears as
    its slice (channels.slice_name), which build() then splits off."""
    names = [t.name for t in graph.of_role(PARAM)]
    if not names:
        hint = ("; its quantized layers keep their weights as integers (the QOperator form): quantize it in "
                "QDQ form (onnxruntime QuantFormat.QDQ) to train them") if any(n.op.startswith("QLinear") or
                                                                              n.op == "QGemm" for n in graph.nodes) else ""
        raise OptionError(f"the model has no float parameters (initializers) to train{hint}")

    def matching(pattern):
        hits = {n for n in names if fnmatchcase(n, pattern)}
        if not hits:
            raise OptionError(f"pattern '{pattern}' matches no parameter; parameters are: {', '.join(names)}")
        return hits

    narrowing = bool(sel.train) or sel.last is not None or sel.bias_only
    partial = channels.select(graph, sel.channels or [])
    chosen = set(names) if narrowing or (sel.bias_last is None and not partial) else set()
    if sel.train:
        chosen &= set().union(*map(matching, sel.train))
    if sel.last is not None:
        layers = _layers(graph)
        if not 1 <= sel.last <= len(layers):
            raise OptionError(f"--train-last {sel.last}: the model has {len(layers)} parameterised layers")
        chosen &= {n for layer in layers[-sel.last:] for n in layer}
    if sel.bias_only:
        chosen &= set(_biases(graph))
    if sel.bias_last is not None:
        biases = _biases(graph)
        if not 1 <= sel.bias_last <= len(biases):
            raise OptionError(f"--train-bias-last {sel.bias_last}: the model has {len(biases)} layers with a bias")
        chosen |= set(biases[-sel.bias_last:])
    frozen = set().union(*map(matching, sel.freeze or []))
    chosen |= {w for w, name in partial.items() if name == w}  # a fraction that takes every channel
    chosen -= frozen
    partial = {w: name for w, name in partial.items() if w not in chosen | frozen}
    if not chosen and not partial:
        raise OptionError("the trainable-set options leave no parameter to train")
    return [partial.get(n, n) for n in names if n in chosen or n in partial]


MODES = ("eval", "train")  # PyTorch's model.eval() / model.train() (../shared/DECISIONS.md §5)


def build(graph: Graph, loss: str, optimizer: Optimizer, output: str | None = None,
          selection: Selection | None = None, fuse: bool = True, accumulate: int = 1,
          mode: str = "eval", update: str = "float") -> TrainingGraph:
    """accumulate = K > 1: one step trains on K micro-batches (the model's batch each), summing
    gradients into persistent accumulators and updating once, like one batch K times larger.
    mode "train": BatchNorm with batch statistics, Dropout active (OpDef.training).
    update "int8": trainable weights of quantized layers train on their integers (quantized.lower)."""
    if mode not in MODES:
        raise OptionError(f"unknown mode '{mode}'; choose one of: {', '.join(MODES)}")
    output = _choose_output(graph, output)
    lossdef = ops.LOSSES.get(loss)
    if lossdef is None:
        raise OptionError(f"unknown loss '{loss}'; choose one of: {', '.join(sorted(ops.LOSSES))}")
    trainable = select_trainable(graph, selection or Selection())
    channels.split(graph, trainable, update)
    for t in graph.of_role(PARAM):
        if t.name not in trainable:
            t.role = FROZEN
    quantized.lower(graph, update)  # frozen quantized layers run in int8 (with update="int8" trained ones too)
    integers = [t.name for t in graph.of_role(PARAM) if t.dtype != "float32"]
    if integers and optimizer.kind != "sgd":
        raise OptionError(f"--update int8 trains '{integers[0]}' on its integers with SGD (quantization-aware "
                          f"scaling); --optimizer {optimizer.kind} is not supported there: use --optimizer sgd "
                          "or --update float")
    forward = _prune(graph, output)
    for node in forward:
        if ops.lookup(node).training:
            ops.lookup(node).training(node, graph, mode == "train")

    out_shape = graph.shape(output)
    try:
        label_shape = tuple(lossdef.label_shape(out_shape))
    except ValueError as e:
        raise OptionError(f"loss '{loss}' on output '{output}': {e}") from None
    labels = graph.add("labels", label_shape, lossdef.label_dtype, LABEL)
    loss_value = graph.add("loss", ())
    loss_node = Node(lossdef.op, [output, labels], [loss_value], {}, "loss", TRAIN_DOMAIN)

    needed = requires_grad(graph, forward)
    if output not in needed:
        raise OptionError(f"output '{output}' does not depend on any trainable parameter")
    seed = graph.add("grad/loss", out_shape)
    seed_node = Node(f"{lossdef.op}Grad", [output, labels], [seed], {}, "loss gradient", TRAIN_DOMAIN)
    back = backward(graph, forward, output, seed, needed)
    forward = back.forward(forward)

    # A selected parameter the loss does not depend on has no gradient: nothing to update.
    grads = {name: grad for name in trainable if (grad := back.total(name))}
    frozen = [t.name for t in graph.of_role(FROZEN)]
    graph.outputs = [output]
    if accumulate > 1:
        if out_shape[:1] != graph.shape(graph.inputs[0])[:1]:
            raise OptionError(f"--accumulate needs the output's first dim to be the batch; '{output}' "
                              f"has shape {out_shape}")
        sums = [_accumulate_node(graph, name, grad, accumulate) for name, grad in grads.items()]
        updates = [_update_node(graph, name, acc.outputs[0], optimizer) for name, acc in zip(grads, sums)]
        body = forward + [loss_node, seed_node] + back.nodes + sums
        graph.nodes = body + updates
        return TrainingGraph(graph, len(forward), output, loss_value, labels, loss, optimizer, trainable,
                             frozen, _fusable(body) if fuse else {}, accumulate, len(body))
    updates = [_update_node(graph, name, grad, optimizer) for name, grad in grads.items()]
    schedule = _place_updates(forward + [loss_node, seed_node] + back.nodes, updates)
    graph.nodes = schedule
    return TrainingGraph(graph, len(forward), output, loss_value, labels, loss, optimizer, trainable,
                         frozen, _fusable(schedule) if fuse else {}, 1, len(schedule))


def _accumulate_node(graph: Graph, param: str, grad: str, k: int) -> Node:
    shape = graph.shape(param)
    acc = graph.add(f"{param}.grad_sum", shape, role=STATE, value=np.zeros(shape, np.float32))
    return Node("Accumulate", [acc, grad], [_new_value(graph, acc)], {"scale": 1.0 / k}, f"accumulate d{param}",
                TRAIN_DOMAIN)


def _new_value(graph: Graph, name: str) -> str:
    """The tensor holding the new value of a parameter/state tensor, written in place of it."""
    return graph.add(f"{name}.new", graph.shape(name), role=UPDATED, in_place_of=name)


def _fusable(schedule: list[Node]) -> dict[str, str]:
    """Gradients that need no buffer: the optimizer op can take them accumulated into a tensor it
    owns (OpDef.fuse_into: the parameter, or a momentum buffer), the producer can accumulate into
    its output (OpDef.emit_update), the gradient has no other reader, and, when the parameter
    itself is written, nothing after the producer reads the old weights. -> {gradient: target}."""
    root = ops.view_roots(schedule)
    steps = {id(n): i for i, n in enumerate(schedule)}
    producer = {o: n for n in schedule for o in n.outputs}
    readers: dict[str, list[Node]] = {}
    for node in schedule:
        for name in node.inputs:
            readers.setdefault(root.get(name, name), []).append(node)
    fused = {}
    for upd in schedule:
        into = ops.lookup(upd).fuse_into
        target = into(upd) if into else None
        if target is None:
            continue
        param, grad = upd.inputs[:2]
        p = producer.get(grad)
        if p is None or ops.lookup(p).emit_update is None or grad in root.values():
            continue
        late = [n for n in readers.get(target, []) if n is not upd and steps[id(n)] >= steps[id(p)]]
        if readers.get(grad) == [upd] and not late:
            fused[grad] = target
    return fused


def _choose_output(graph: Graph, output: str | None) -> str:
    if output is None:
        if len(graph.outputs) != 1:
            raise OptionError(f"the model has {len(graph.outputs)} outputs ({', '.join(graph.outputs)}); "
                              "choose the one the loss is attached to with --output NAME")
        return graph.outputs[0]
    if output not in graph.outputs:
        raise OptionError(f"'{output}' is not a model output; outputs are: {', '.join(graph.outputs)}")
    return output


def _prune(graph: Graph, output: str) -> list[Node]:
    """Forward nodes the chosen output depends on, in order."""
    wanted, kept = {output}, []
    for node in reversed(graph.nodes):
        if any(o in wanted for o in node.outputs):
            kept.append(node)
            wanted.update(i for i in node.inputs if i)
    return kept[::-1]


def _update_node(graph: Graph, param: str, grad: str, opt: Optimizer) -> Node:
    """The optimizer node for one parameter; its state tensors start at zero."""
    shape = graph.shape(param)
    state = [graph.add(f"{param}.{kind}", shape, role=STATE, value=np.zeros(shape, np.float32))
             for kind in opt.state()]
    node = opt.node(param, grad, state, [_new_value(graph, name) for name in [param, *state]])
    if graph.tensors[param].dtype != "float32":  # trains on its integers (--update int8)
        node.attrs["integer"] = 1
    return node


def _place_updates(schedule: list[Node], updates: list[Node]) -> list[Node]:
    """Put each update right after both its gradient is complete and the last read of the old
    weights, so the gradient buffer dies at once instead of living to the end of the step."""
    root = ops.view_roots(schedule)
    last = {}
    for i, node in enumerate(schedule):
        for name in list(node.inputs) + list(node.outputs):
            last[root.get(name, name)] = i
    after: dict[int, list[Node]] = {}
    for upd in updates:
        param, grad = upd.inputs[:2]
        after.setdefault(max(last[root.get(param, param)], last[root.get(grad, grad)]), []).append(upd)
    placed = []
    for i, node in enumerate(schedule):
        placed.append(node)
        placed.extend(after.get(i, []))
    return placed
