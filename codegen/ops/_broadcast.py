"""Numpy broadcasting for the elementwise binary ops and the gradient that undoes it."""
from . import invalid, refuse, register

MAX_RANK = 6  # MT_MAX_RANK in runtime_c/mt_common.h


def strides_over(shape: tuple, out_shape: tuple) -> list[int]:
    """Element strides of a tensor of `shape` walked over `out_shape`: 0 along broadcast dims."""
    padded = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    strides, step = [], 1
    for dim in reversed(padded):
        strides.append(step if dim != 1 else 0)
        step *= dim
    return strides[::-1]


def check_broadcast(node, graph, slot: int, what: str) -> None:
    """Input `slot` must broadcast (numpy rules, one way) to output 0's shape."""
    shape, out = tuple(graph.shape(node.inputs[slot])), tuple(graph.shape(node.outputs[0]))
    if len(shape) > len(out) or any(d not in (1, o) for d, o in zip(reversed(shape), reversed(out))):
        raise invalid(node, f"{what} '{node.inputs[slot]}' of shape {list(shape)} does not broadcast to the "
                            f"output shape {list(out)}")


def check_rank(node, graph):
    rank = len(graph.shape(node.outputs[0]))
    if rank > MAX_RANK:
        raise refuse(node, f"broadcasting over {rank} dimensions (at most {MAX_RANK})")


def register_binary(name: str, fn: str, grad, bias_inputs: tuple[int, ...] = ()) -> None:
    def emit(node, c):
        a, b = node.inputs
        y = node.outputs[0]
        out = c.shape(y)
        if c.shape(a) == c.shape(b) == out:
            return f"{fn}({c.ptr(a)}, {c.ptr(b)}, {c.ptr(y)}, 0, NULL, NULL, NULL, {c.size(y)});"
        shape, sa, sb = c.ints(out), c.ints(strides_over(c.shape(a), out)), c.ints(strides_over(c.shape(b), out))
        return f"{fn}({c.ptr(a)}, {c.ptr(b)}, {c.ptr(y)}, {len(out)}, {shape}, {sa}, {sb}, {c.size(y)});"

    register(name, kernel="binary.h", emit=emit, grad=grad, diff_inputs=(0, 1), check=check_rank,
             bias_inputs=bias_inputs, inplace=True)
