"""Reverse-mode differentiation over the IR: one gradient rule per op (in codegen/ops), fan-out
gradients summed, nothing computed for tensors that no trainable parameter depends on."""
from __future__ import annotations

from .errors import InternalError, UnsupportedError
from .ir import PARAM, TRAIN_DOMAIN, Graph, Node
from . import ops


def requires_grad(graph: Graph, nodes: list[Node]) -> set[str]:
    """Tensors whose value depends on a trainable parameter through differentiable inputs."""
    needed = {t.name for t in graph.of_role(PARAM)}
    for node in nodes:
        op = ops.lookup(node)
        if any(s < len(node.inputs) and node.inputs[s] in needed for s in op.diff_inputs):
            needed.update(o for o in node.outputs if o)
    return needed


class GradContext:
    """What a gradient rule sees: the node's output gradients, which inputs need one, and a way
    to add nodes to the backward graph."""

    def __init__(self, builder: "Backward", node: Node, dys: list[str | None], needs: list[bool]):
        self._b, self.node, self._dys, self._needs = builder, node, dys, needs
        self.given: set[int] = set()

    def dy(self, k: int = 0) -> str:
        return self._dys[k]

    def needs(self, i: int) -> bool:
        return i < len(self._needs) and self._needs[i]

    def shape(self, name: str) -> tuple[int, ...]:
        return self._b.graph.shape(name)

    def integer_param(self, name: str) -> bool:
        """Whether `name` is a parameter that trains on its integers (--update int8)."""
        t = self._b.graph.tensors[name]
        return t.role == PARAM and t.dtype != "float32"

    def op(self, op: str, inputs: list[str], like: str | None, attrs: dict | None = None,
           domain: str = TRAIN_DOMAIN, shape: tuple[int, ...] | None = None) -> str:
        """Add `op(inputs)` to the backward graph; its output has the shape of tensor `like` (or
        `shape`: a buffer of its own, like the packed gradients of a recurrent layer)."""
        return self._b.add(op, inputs, shape or self.shape(like), attrs or {}, domain, self.node)

    def save(self, op: str, inputs: list[str], dtype: str = "bit") -> str:
        """Add `op(inputs)` to the forward pass, right after this node: what the backward keeps
        of it (a 1-bit mask instead of the activation). Its output has the shape of inputs[0]."""
        return self._b.save(op, inputs, self.shape(inputs[0]), dtype, self.node)

    def output(self, k: int, shape, what: str | None = None) -> str:
        """Output k of the node, added if the model reads it nowhere: a by-product the forward
        kernel writes anyway (LayerNorm's row statistics) kept for the backward, planned like any
        activation; named saved/<what>/<output 0> (`what` says what it is to memory reports)."""
        outs = self.node.outputs
        outs.extend([""] * (k + 1 - len(outs)))
        if not outs[k]:
            outs[k] = self._b.graph.add(f"saved/{what or f'{self.node.op}{k}'}/{outs[0]}", shape)
        return outs[k]

    def kept(self, name: str) -> bool:
        """Whether the tensor stays alive for the backward anyway: a model output, or read (through
        views) by a backward node built so far (the gradients of the nodes after this one)."""
        return self._b.kept(name)

    def give(self, i: int, grad: str) -> None:
        self.given.add(i)
        self._b.contribute(self.node.inputs[i], grad)


class Backward:
    """Builds the backward nodes; `grads[t]` collects the contributions to d loss / d t."""

    def __init__(self, graph: Graph, forward: list[Node]):
        self.graph, self.nodes, self.grads = graph, [], {}
        # Forward views share their source's buffer; backward views only reshape gradients.
        self.roots = ops.view_roots(forward)
        self.saved: dict[int, list[Node]] = {}  # id(forward node) -> nodes to run right after it
        self._count = 0

    def save(self, op, inputs, shape, dtype, origin: Node) -> str:
        name = self.graph.add(f"saved/{op}/{origin.outputs[0]}", shape, dtype)
        self.saved.setdefault(id(origin), []).append(
            Node(op, list(inputs), [name], {}, f"saved for the gradient of {origin.name or origin.outputs[0]}",
                 TRAIN_DOMAIN))
        return name

    def kept(self, name: str) -> bool:
        root = self.roots
        mine = root.get(name, name)
        return mine in {root.get(o, o) for o in self.graph.outputs} or \
            any(root.get(i, i) == mine for n in self.nodes for i in n.inputs)

    def forward(self, nodes: list[Node]) -> list[Node]:
        """The forward pass with the saved nodes in place."""
        return [m for n in nodes for m in (n, *self.saved.get(id(n), []))]

    def add(self, op, inputs, shape, attrs, domain, origin: Node | None) -> str:
        self._count += 1
        base = origin.outputs[0] if origin else inputs[0]
        name = self.graph.add(f"grad{self._count}/{op}/{base}", shape)
        label = f"grad of {origin.name or origin.outputs[0]}" if origin else "sum of gradients"
        self.nodes.append(Node(op, list(inputs), [name], dict(attrs), label, domain))
        return name

    def contribute(self, tensor: str, grad: str) -> None:
        self.grads.setdefault(tensor, []).append(grad)

    def total(self, tensor: str) -> str | None:
        """The gradient of `tensor`, summing fan-out contributions with Add nodes."""
        parts = self.grads.get(tensor)
        if not parts:
            return None
        total = parts[0]
        for part in parts[1:]:
            total = self.add("Add", [total, part], self.graph.shape(tensor), {}, "", None)
        self.grads[tensor] = [total]
        return total


def backward(graph: Graph, forward: list[Node], output: str, seed: str, needed: set[str]) -> Backward:
    """Walk `forward` in reverse from d loss / d output = `seed`, applying each op's rule."""
    b = Backward(graph, forward)
    b.contribute(output, seed)
    for node in reversed(forward):
        op = ops.lookup(node)
        needs = [name in needed and slot in op.diff_inputs for slot, name in enumerate(node.inputs)]
        if not any(needs):
            continue
        dys = [b.total(o) if o else None for o in node.outputs]
        if all(d is None for d in dys):
            continue
        if op.grad is None:
            raise UnsupportedError(f"{node.describe()}: no gradient rule for op '{node.op}'; "
                                   "freeze the parameters before it (--freeze) so none is needed")
        ctx = GradContext(b, node, dys, needs)
        op.grad(node, ctx)
        missing = [node.inputs[i] for i, need in enumerate(needs) if need and i not in ctx.given]
        if missing:  # a rule that forgets an input would train silently wrong
            raise InternalError(f"{node.describe()}: the gradient rule of '{node.op}' gave no gradient to "
                                f"input(s) {missing}")
    return b
