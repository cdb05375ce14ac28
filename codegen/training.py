"""Stage 2: the training graph. Forward (pruned to the loss output) + loss + backward + one
optimizer update per trainable parameter, scheduled as soon as it is safe."""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

import numpy as np

from . import ops
from .autodiff import backward, requires_grad
from .errors import OptionError
from .ir import ACT, FROZEN, LABEL, PARAM, STATE, TRAIN_DOMAIN, Graph, Node, Tensor

UPDATED = "updated"  # role of an optimizer output: the new value, written in place of its input


@dataclass
class Optimizer:
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False

    def __post_init__(self):
        if self.lr <= 0 or self.momentum < 0 or self.weight_decay < 0:
            raise OptionError("lr must be > 0, momentum and weight_decay >= 0")
        if self.nesterov and self.momentum == 0:
            raise OptionError("nesterov needs momentum > 0")


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


def select_trainable(graph: Graph, train: list[str] | None, freeze: list[str] | None) -> list[str]:
    """Glob patterns on parameter names: --train picks a subset (default all), --freeze removes."""
    names = [t.name for t in graph.of_role(PARAM)]
    if not names:
        raise OptionError("the model has no float parameters (initializers) to train")

    def matching(pattern):
        hits = [n for n in names if fnmatchcase(n, pattern)]
        if not hits:
            raise OptionError(f"pattern '{pattern}' matches no parameter; parameters are: {', '.join(names)}")
        return hits

    chosen = set(names) if not train else {n for p in train for n in matching(p)}
    chosen -= {n for p in freeze or [] for n in matching(p)}
    if not chosen:
        raise OptionError("--train/--freeze leave no parameter to train")
    return [n for n in names if n in chosen]


def build(graph: Graph, loss: str, optimizer: Optimizer, output: str | None = None,
          train: list[str] | None = None, freeze: list[str] | None = None) -> TrainingGraph:
    output = _choose_output(graph, output)
    lossdef = ops.LOSSES.get(loss)
    if lossdef is None:
        raise OptionError(f"unknown loss '{loss}'; choose one of: {', '.join(sorted(ops.LOSSES))}")
    trainable = select_trainable(graph, train, freeze)
    for t in graph.of_role(PARAM):
        if t.name not in trainable:
            t.role = FROZEN
    forward = _prune(graph, output)

    out_shape = graph.shape(output)
    try:
        label_shape = tuple(lossdef.label_shape(out_shape))
    except ValueError as e:
        raise OptionError(f"loss '{loss}' on output '{output}': {e}") from None
    graph.tensors["labels"] = Tensor("labels", label_shape, lossdef.label_dtype, LABEL)
    graph.tensors["loss"] = Tensor("loss", (), "float32", ACT)
    loss_node = Node(lossdef.op, [output, "labels"], ["loss"], {}, "loss", TRAIN_DOMAIN)

    needed = requires_grad(graph, forward)
    if output not in needed:
        raise OptionError(f"output '{output}' does not depend on any trainable parameter")
    seed = "grad/loss"
    graph.tensors[seed] = Tensor(seed, out_shape, "float32", ACT)
    seed_node = Node(f"{lossdef.op}Grad", [output, "labels"], [seed], {}, "loss gradient", TRAIN_DOMAIN)
    back = backward(graph, forward, output, seed, needed)

    grads = {name: back.total(name) for name in trainable}
    # A selected parameter the loss does not depend on has no gradient: nothing to update.
    updates = [_sgd_node(graph, name, grad, optimizer) for name, grad in grads.items() if grad]
    schedule = _place_updates(forward + [loss_node, seed_node] + back.nodes, updates)
    graph.nodes = schedule
    graph.outputs = [output]
    return TrainingGraph(graph, len(forward), output, "loss", "labels", loss, optimizer,
                         trainable, [t.name for t in graph.of_role(FROZEN)])


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


def _sgd_node(graph: Graph, param: str, grad: str, opt: Optimizer) -> Node:
    inputs, outputs = [param, grad], [f"{param}.new"]
    graph.tensors[outputs[0]] = Tensor(outputs[0], graph.shape(param), "float32", UPDATED)
    if opt.momentum:
        buf = f"{param}.momentum"
        graph.tensors[buf] = Tensor(buf, graph.shape(param), "float32", STATE,
                                    np.zeros(graph.shape(param), np.float32))
        graph.tensors[f"{buf}.new"] = Tensor(f"{buf}.new", graph.shape(param), "float32", UPDATED)
        inputs.append(buf)
        outputs.append(f"{buf}.new")
    attrs = {"lr": opt.lr, "momentum": opt.momentum, "weight_decay": opt.weight_decay,
             "nesterov": int(opt.nesterov)}
    return Node("SGD", inputs, outputs, attrs, f"update {param}", TRAIN_DOMAIN)


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
