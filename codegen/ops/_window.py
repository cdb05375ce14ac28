"""Sliding-window geometry shared by Conv and the pooling ops: the ONNX attributes (kernel,
strides, dilations, pads, auto_pad, ceil_mode) resolved into one 2-D window, the `mt_window` of
runtime_c/kernels/pool.h. A 1-D op (N, C, W) becomes 2-D with H = 1 so one kernel serves both."""
from __future__ import annotations

from dataclasses import dataclass
from math import ceil

from . import attr, refuse
from ._layout import check_flags

AUTO_PADS = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")
SPATIAL_RANKS = (1, 2)


@dataclass(frozen=True)
class Window:
    size: tuple[int, ...]  # input spatial dims
    out: tuple[int, ...]
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    begin: tuple[int, ...]  # pads before each spatial dim
    end: tuple[int, ...]  # pads after

    def c(self) -> str:
        """An mt_window compound literal; 1-D windows get a trivial H dimension in front."""
        fields = (self.size, self.out, self.kernel, self.strides, self.dilations)
        lifted = [(1,) * (2 - len(f)) + f for f in fields]
        pads = [(0,) * (2 - len(p)) + p for p in (self.begin, self.end)]
        return "(mt_window){" + ", ".join(str(v) for f in lifted + pads for v in f) + "}"


def auto_pad(node) -> str:
    value = attr(node, "auto_pad", "NOTSET")
    return value.decode() if isinstance(value, bytes) else value


def _pads(node, size, kernel, strides, dilations):
    """(begin, end) pads: explicit, or what auto_pad asks for (SAME: output = ceil(input/stride),
    the odd pad at the end for SAME_UPPER, at the start for SAME_LOWER)."""
    mode, rank = auto_pad(node), len(size)
    if mode == "NOTSET":
        pads = tuple(attr(node, "pads", (0,) * 2 * rank))
        return pads[:rank], pads[rank:]
    if mode == "VALID":
        return (0,) * rank, (0,) * rank
    total = [max(0, (ceil(n / s) - 1) * s + (k - 1) * d + 1 - n)
             for n, k, s, d in zip(size, kernel, strides, dilations)]
    small = tuple(t // 2 for t in total)
    large = tuple(t - h for t, h in zip(total, small))
    return (small, large) if mode == "SAME_UPPER" else (large, small)


def _out_len(n, k, s, d, begin, end, ceil_mode) -> int:
    """Output length; with ceil_mode the last window must still start inside the input or its
    leading pad (as in PyTorch and onnxruntime)."""
    span = n + begin + end - (k - 1) * d - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    return out - 1 if ceil_mode and (out - 1) * s >= n + begin else out


def window(node, x_shape, kernel, ceil_mode: bool = False) -> Window:
    """The window of an op over input `x_shape` (N, C, *spatial) with `kernel` taps."""
    size, kernel = tuple(x_shape[2:]), tuple(kernel)
    rank = len(size)
    strides = tuple(attr(node, "strides", (1,) * rank))
    dilations = tuple(attr(node, "dilations", (1,) * rank))
    begin, end = _pads(node, size, kernel, strides, dilations)
    out = tuple(_out_len(*dims, ceil_mode) for dims in zip(size, kernel, strides, dilations, begin, end))
    return Window(size, out, kernel, strides, dilations, tuple(begin), tuple(end))


def check(node, graph, kernel, ceil_mode: bool = False) -> Window:
    """Refuse what the kernels cannot do; the output shape must be what onnx inferred."""
    x_shape = graph.shape(node.inputs[0])
    rank = len(x_shape) - 2
    if rank not in SPATIAL_RANKS:
        raise refuse(node, f"{node.op} over {rank} spatial dimensions (only 1-D and 2-D)")
    if auto_pad(node) not in AUTO_PADS:
        raise refuse(node, f"auto_pad '{auto_pad(node)}'")
    for key, length in (("kernel_shape", rank), ("strides", rank), ("dilations", rank), ("pads", 2 * rank)):
        value = attr(node, key)
        if value is not None and (len(value) != length or min(value) < (0 if key == "pads" else 1)):
            raise refuse(node, f"{key} {list(value)} for {rank} spatial dimension(s)")
    if len(kernel) != rank:
        raise refuse(node, f"a kernel of shape {list(kernel)} over {rank} spatial dimension(s)")
    win = window(node, x_shape, kernel, ceil_mode)
    inferred = tuple(graph.shape(node.outputs[0])[2:])
    if win.out != inferred:
        raise refuse(node, f"output spatial shape {list(inferred)} (from shape inference) where the "
                           f"attributes give {list(win.out)} (onnxruntime/PyTorch semantics)")
    return win


def pool_window(node, x_shape) -> Window:
    return window(node, x_shape, attr(node, "kernel_shape"), bool(attr(node, "ceil_mode", 0)))


def pool_args(node, c, x) -> str:
    """The pooling kernels' plane count (N*C) and window arguments for input `x`."""
    shape = c.shape(x)
    return f"{shape[0] * shape[1]}, {pool_window(node, shape).c()}"


def check_pool(node, graph) -> None:
    """Pads must be narrower than the (dilated) kernel, as in onnxruntime and PyTorch: a window
    of padding only has no maximum or average."""
    kernel = attr(node, "kernel_shape")
    if kernel is None:
        raise refuse(node, f"{node.op} without kernel_shape")
    check_flags(node, "ceil_mode", "count_include_pad")
    win = check(node, graph, kernel, bool(attr(node, "ceil_mode", 0)))
    spans = [(k - 1) * d + 1 for k, d in zip(win.kernel, win.dilations)]
    if any(p >= span for p, span in zip(win.begin + win.end, spans * 2)):
        raise refuse(node, f"pads {list(win.begin + win.end)} as large as the kernel {list(win.kernel)}")
