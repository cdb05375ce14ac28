"""The intermediate representation: plain dataclasses shared by every stage after loading."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Domain of the training-only ops (gradients, losses, optimizer) in the training graph.
TRAIN_DOMAIN = "ai.mcutrain"

# Roles a tensor plays; they decide where its bytes live in the generated C.
INPUT = "input"  # model input, passed in by the caller
LABEL = "label"  # training targets, passed in by the caller
PARAM = "param"  # trainable parameter: the parameter blob (RAM)
FROZEN = "frozen"  # frozen parameter: const (flash)
CONST = "const"  # other constants: const (flash)
STATE = "state"  # optimizer state (momentum): RAM, persists across steps
ACT = "act"  # intermediate value (activation, loss, gradient): the arena


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    role: str = ACT
    value: np.ndarray | None = None  # for PARAM/FROZEN/CONST/STATE: the initial value
    in_place_of: str | None = None  # a new value of a parameter/state tensor: written over it

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)
    name: str = ""
    domain: str = ""

    def describe(self) -> str:
        return f"node '{self.name or self.outputs[0]}' ({self.op})"


@dataclass
class Graph:
    tensors: dict[str, Tensor]
    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]
    opset: int

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name].shape

    def add(self, name: str, shape, dtype: str = "float32", role: str = ACT, value=None,
            in_place_of: str | None = None) -> str:
        """Add a compiler-made tensor under `name`, or `name#k` when the model already has a
        tensor of that name (a model may well call a tensor 'loss'); returns the name used."""
        unique, k = name, 1
        while unique in self.tensors:
            k += 1
            unique = f"{name}#{k}"
        self.tensors[unique] = Tensor(unique, tuple(shape), dtype, role, value, in_place_of)
        return unique

    def of_role(self, role: str) -> list[Tensor]:
        return [t for t in self.tensors.values() if t.role == role]
