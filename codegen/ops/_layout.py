"""Helpers shared by the shape-moving ops: compile-time constant inputs, axes, strides."""
from math import prod

from . import attr, invalid, refuse
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
    """A constant scalar input (e.g. Clip's min), None if absent; a 1-element vector passes, as
    in onnxruntime."""
    value = constant(node, graph, slot, what)
    if value is not None and (value.size != 1 or value.ndim > 1):
        raise invalid(node, f"{what} '{node.inputs[slot]}' of shape {list(value.shape)} is not a scalar")
    return None if value is None else float(value.reshape(()))


def vector(node, graph, slot: int, what: str):
    """A constant 1-D input (axes, pads, a target shape), None if absent; onnx's shape inference
    reads any rank, onnxruntime refuses all but 1-D."""
    value = constant(node, graph, slot, what)
    if value is not None and value.ndim != 1:
        raise invalid(node, f"{what} '{node.inputs[slot]}' of shape {list(value.shape)} is not 1-D")
    return value


def check_flags(node, *keys: str) -> None:
    """Boolean attributes are 0 or 1: onnx's shape inference and onnxruntime read other values
    differently (e.g. noop_with_empty_axes=2: no reduction for the one, all axes for the other)."""
    for key in keys:
        if attr(node, key, 0) not in (0, 1):
            raise invalid(node, f"{key}={attr(node, key)} (a boolean: 0 or 1)")


def check_axes(node, graph) -> None:
    """Squeeze and Unsqueeze: shape inference did the rest."""
    vector(node, graph, 1, "axes")


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
