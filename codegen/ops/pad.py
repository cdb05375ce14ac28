"""Pad, mode "constant": pads (begins then ends, for `axes` or all axes), constant_value and axes
are constant inputs. Negative pads crop. The gradient is a Pad of dy with the pads negated and
zero fill: it crops what was padded (and zero-fills what was cropped)."""
from . import attr, refuse, register, register_train_op
from ._layout import check_rank, norm_axes, optional_ptr, row_major, scalar, vector


def full_pads(node, graph, rank: int) -> list[int]:
    """The pads input spread over all `rank` axes: [begin_0.., end_0..]."""
    pads = [int(p) for p in vector(node, graph, 1, "pads")]
    axes = vector(node, graph, 3, "axes")
    axes = range(rank) if axes is None else norm_axes(axes, rank)
    full = [0] * (2 * rank)
    for i, axis in enumerate(axes):
        full[axis], full[rank + axis] = pads[i], pads[len(axes) + i]
    return full


def check(node, graph):
    mode = attr(node, "mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise refuse(node, f"Pad mode '{mode}' (only 'constant')")
    rank = len(graph.shape(node.inputs[0]))
    if rank == 0:
        raise refuse(node, "Pad of a scalar")
    check_rank(node, rank)
    full_pads(node, graph, rank)
    scalar(node, graph, 2, "constant_value")


def emit_pad(c, x: str, y: str, pads: list[int], value: str) -> str:
    """mt_pad: fill y with *value where anything is padded, then copy what survives cropping."""
    xs, ys = c.shape(x), c.shape(y)
    rank = len(xs)
    begins, ends = pads[:rank], pads[rank:]
    src = [max(-b, 0) for b in begins]
    box = [n - s - max(-e, 0) for n, s, e in zip(xs, src, ends)]
    sx, sy = row_major(xs), row_major(ys)
    xoff = sum(s * k for s, k in zip(src, sx))
    yoff = sum(max(b, 0) * k for b, k in zip(begins, sy))
    fill = c.size(y) if any(p > 0 for p in pads) else 0
    copy = rank if min(box) > 0 else 0
    return (f"mt_pad({c.ptr(x)}, {c.ints(sx)}, {c.ptr(y)}, {c.ints(sy)}, {fill}, {value}, {copy}, "
            f"{c.ints(box)}, {xoff}, {yoff});")


def emit(node, c):
    x, y = node.inputs[0], node.outputs[0]
    pads = full_pads(node, c.tg.graph, len(c.shape(x)))
    return emit_pad(c, x, y, pads, optional_ptr(c, node, 2))


def grad(node, g):
    """PadGrad(dy, pads, constant_value, axes): the constant inputs ride along in the same slots."""
    g.give(0, g.op("PadGrad", [g.dy(), *node.inputs[1:]], like=node.inputs[0]))


def emit_grad(node, c):
    dy, dx = node.inputs[0], node.outputs[0]
    pads = full_pads(node, c.tg.graph, len(c.shape(dx)))
    return emit_pad(c, dy, dx, [-p for p in pads], "NULL")


register("Pad", kernel="box.h", emit=emit, grad=grad, check=check)
register_train_op("PadGrad", kernel="box.h", emit=emit_grad)
