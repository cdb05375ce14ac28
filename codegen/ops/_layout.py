"""Helpers shared by the shape-moving ops: compile-time constant inputs, axes, strides."""
from math import prod

from . import refuse
from ._broadcast import MAX_RANK


def constant(node, graph, slot: int, what: str):
    """The compile-time value of optional input `slot`, None if absent; a computed one is refused."""
    if slot >= len(node.inputs) or not node.inputs[slot]:
        return None
    value = graph.tensors[node.inputs[slot]].value
    if value is None:
        raise refuse(node, f"a computed (non-constant) {what} input")
    return value


def scalar(node, graph, slot: int, what: str) -> float | None:
    """A constant scalar input (e.g. Clip's min), None if absent."""
    value = constant(node, graph, slot, what)
    if value is not None and value.size != 1:
        raise refuse(node, f"a {what} input with {value.size} elements (a scalar is expected)")
    return None if value is None else float(value.reshape(()))


def optional_ptr(c, node, slot: int) -> str:
    """The C pointer to optional input `slot`, or NULL if absent."""
    return c.ptr(node.inputs[slot]) if slot < len(node.inputs) and node.inputs[slot] else "NULL"


def norm_axes(axes, rank: int) -> list[int]:
    """ONNX axes (negative count from the end) as indices in [0, rank)."""
    return [int(a) + rank if int(a) < 0 else int(a) for a in axes]


def row_major(shape) -> list[int]:
    """Element strides of a contiguous tensor of `shape`."""
    return [prod(shape[d + 1:]) for d in range(len(shape))]


def ints(c, values) -> str:
    """A static int32 array, or NULL for none (C99 has no empty arrays)."""
    return c.ints(values) if len(values) else "NULL"


def check_rank(node, rank: int) -> None:
    if rank > MAX_RANK:
        raise refuse(node, f"a tensor of {rank} dimensions (at most {MAX_RANK})")
