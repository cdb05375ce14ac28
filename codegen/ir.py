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
RUNNING = "running"  # state the forward pass updates (BatchNorm running statistics): RAM, in the blob
ACT = "act"  # intermediate value (activation, loss, gradient): the arena

BIT = "bit"  # a mask packed 8 elements per byte (least significant bit first)

# Bytes per element of each dtype a tensor can have in the generated C.
ITEMSIZE = {"float32": 4, "int32": 4, "int64": 8, "int8": 1, "uint8": 1, "bool": 1, "int16": 2, "uint16": 2,
            "uint32": 4, "uint64": 8}  # the last four: constants read at compile time (a Pow exponent)


def fresh(name: str, taken, sep: str) -> str:
    """`name`, or `name<sep>k` with the smallest k >= 2 that `taken` does not hold."""
    unique, k = name, 1
    while unique in taken:
        k += 1
        unique = f"{name}{sep}{k}"
    return unique


@dataclass
class Quantized:
    """How a float parameter is stored in a quantized model: value = scale * (values - zero_point),
    scale and zero point per tensor or along `axis`. The float tensor keeps the dequantized value,
    so trainable-set patterns and float layers see the model's float names."""
    values: np.ndarray  # int8 (weights) or int32 (biases)
    scale: np.ndarray  # float32, scalar or 1-D along axis
    zero_point: np.ndarray  # same shape as scale
    axis: int = 0


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    role: str = ACT
    value: np.ndarray | None = None  # for PARAM/FROZEN/CONST/STATE: the initial value
    in_place_of: str | None = None  # a new value of a parameter/state tensor: written over it
    quant: Quantized | None = None  # for parameters of a quantized model: their integer form

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return (self.size + 7) // 8 if self.dtype == BIT else self.size * ITEMSIZE[self.dtype]


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
        unique = fresh(name, self.tensors, "#")
        self.tensors[unique] = Tensor(unique, tuple(shape), dtype, role, value, in_place_of)
        return unique

    def of_role(self, role: str) -> list[Tensor]:
        return [t for t in self.tensors.values() if t.role == role]
