"""Shared shape of the recurrent ops (RNN, GRU, LSTM): inputs X, W, R, B, sequence_lens,
initial_h (, initial_c); outputs Y, Y_h (, Y_c). One C kernel runs every cell over time
(runtime_c/kernels/recurrent.h). Training turns the node into its `<Op>Train` form, which also
writes the gate values of every step (the trace, planned like any activation); `<Op>Grad` runs
backpropagation through time into one packed buffer, and `RecurrentGradPart` copies each wanted
gradient out of it (or applies it as the SGD update directly)."""
from dataclasses import dataclass

import numpy as np

from ..ir import CONST, PARAM, TRAIN_DOMAIN
from . import attr, invalid, refuse, register, register_train_op

X, W, R, B, SEQ, H0, C0, P = range(8)


@dataclass(frozen=True)
class Cell:
    op: str
    gates: int  # gate blocks in W, R (ONNX order)
    trace: int  # values per hidden unit and step the backward needs besides h_t (Y)
    activations: tuple[str, ...]  # the default activations (the only ones supported)
    states: int  # 1: h; 2: h and c (LSTM)


def _direction(node) -> str:
    d = attr(node, "direction", "forward")
    return d.decode() if isinstance(d, bytes) else d


def sizes(node, shape):
    """(S, B, I, H, D) of a recurrent node or its gradient (both read X, R at inputs 0, 2)."""
    s, b, i = shape(node.inputs[X])
    if attr(node, "layout", 0):
        s, b = b, s
    d, _, h = shape(node.inputs[R])
    return s, b, i, h, d


def state_shape(node, shape):
    s, b, i, h, d = sizes(node, shape)
    return (b, d, h) if attr(node, "layout", 0) else (d, b, h)


def check(cell: Cell, node, graph):
    """Refuse what the kernel does not do; give the node a Y (and Y_c) to keep its states in (and
    a Y_h for GRU's r * h_{t-1} when linear_before_reset is 0)."""
    def given(slot):
        return slot < len(node.inputs) and bool(node.inputs[slot])

    direction = _direction(node)
    if direction not in ("forward", "reverse", "bidirectional"):
        raise invalid(node, f"direction '{direction}'")
    if attr(node, "layout", 0) not in (0, 1):
        raise invalid(node, f"layout {attr(node, 'layout')}")
    s, b, i, h, d = sizes(node, graph.shape)
    if d != (2 if direction == "bidirectional" else 1) or graph.shape(node.inputs[W]) != (d, cell.gates * h, i):
        raise invalid(node, f"W of shape {list(graph.shape(node.inputs[W]))} and R of shape "
                      f"{list(graph.shape(node.inputs[R]))} for {direction} {cell.op}")
    acts = [a.decode() if isinstance(a, bytes) else a for a in attr(node, "activations", [])]
    if acts and [a.lower() for a in acts] != [a.lower() for a in cell.activations * d]:
        raise refuse(node, f"{cell.op} with activations {acts} (only the default {list(cell.activations)})")
    if attr(node, "clip") is not None:
        raise refuse(node, f"{cell.op} with clip")
    if attr(node, "input_forget", 0):
        raise refuse(node, "LSTM with input_forget=1")
    if given(P):
        raise refuse(node, "LSTM with peepholes (input P)")
    if given(SEQ):
        lens = graph.tensors[node.inputs[SEQ]]
        if lens.role != CONST:
            raise refuse(node, f"{cell.op} with sequence_lens computed at run time ('{lens.name}': give "
                         "fixed-length sequences)")
        if np.any(np.asarray(lens.value) != s):
            raise refuse(node, f"{cell.op} with sequence_lens shorter than the sequence ({s} steps)")
    for slot in (H0, C0)[:cell.states]:
        t = graph.tensors.get(node.inputs[slot]) if given(slot) else None
        if t is not None and t.role == PARAM:  # nn.GRU / nn.LSTM learn no initial state; torch exports zeros
            t.role = CONST
    outs = node.outputs
    outs.extend([""] * (1 + cell.states - len(outs)))
    y_shape = (b, s, d, h) if attr(node, "layout", 0) else (s, d, b, h)
    if not outs[0]:
        outs[0] = graph.add(f"{node.name or cell.op}/Y", y_shape)
    if cell.states == 2 and not outs[2]:
        outs[2] = graph.add(f"{node.name or cell.op}/Y_c", state_shape(node, graph.shape))
    if _reset_first(cell, node) and not outs[1]:  # its r * h_{t-1} during each step
        outs[1] = graph.add(f"{node.name or cell.op}/Y_h", state_shape(node, graph.shape))


def _reset_first(cell: Cell, node) -> bool:
    """GRU with linear_before_reset = 0: the reset gate applies to h_{t-1} before R_n."""
    return cell.op == "GRU" and not attr(node, "linear_before_reset", 0)


def dims(cell: Cell, node, c, traced: bool) -> str:
    """The kernel's dims array (recurrent.h): sizes, then element strides."""
    s, b, i, h, d = sizes(node, c.shape)
    k = cell.trace
    if attr(node, "layout", 0):
        x, y, st = [i, s * i], [h, d * h, s * d * h], [h, d * h]
    else:
        x, y, st = [b * i, i], [b * h, d * b * h, h], [b * h, h]
    tr = [s * b * k * h, b * k * h, k * h]
    cs = [tr[0], tr[1], tr[2]] if traced else [st[0], 0, st[1]]  # trace slot k-1, or in place in Y_c
    return c.ints([cell.gates, s, b, i, h, d, int(_direction(node) == "reverse"), *x, *y, *cs, *st, *tr, k,
                   int(_reset_first(cell, node))])


def _opt(c, node, slot, offset=0):
    name = node.inputs[slot] if slot < len(node.inputs) else ""
    return f"{c.ptr(name)} + {offset}" if name and offset else (c.ptr(name) if name else "NULL")


def _out(c, node, k):
    return c.ptr(node.outputs[k]) if k < len(node.outputs) and node.outputs[k] else "NULL"


def emit_forward(cell: Cell, node, c, traced: bool):
    h = sizes(node, c.shape)[3]
    trace = _out(c, node, 1 + cell.states) if traced else "NULL"
    cs = "NULL" if cell.states == 1 else (f"{trace} + {(cell.trace - 1) * h}" if traced else _out(c, node, 2))
    states = [_opt(c, node, H0), _opt(c, node, C0) if cell.states == 2 else "NULL"]
    args = [dims(cell, node, c, traced), *(_opt(c, node, k) for k in (X, W, R, B)), *states, _out(c, node, 0), cs,
            trace, _out(c, node, 1), _out(c, node, 2) if cell.states == 2 else "NULL"]
    return f"mt_rec_forward({', '.join(args)});"


# Packed gradient parts in order: (input slot, size) from the node's sizes (s, b, i, h, d), gates g.
PARTS = {X: lambda s, b, i, h, d, g: s * b * i, W: lambda s, b, i, h, d, g: d * g * h * i,
         R: lambda s, b, i, h, d, g: d * g * h * h, B: lambda s, b, i, h, d, g: d * 2 * g * h}


def layout(cell: Cell, sz, wanted: list[int]) -> dict[str, int]:
    """Offsets (floats) of the packed gradient: the wanted parts, then dh, dc (LSTM), scratch."""
    offsets, at = {}, 0
    s, b, i, h, d = sz
    for slot in (X, W, R, B):
        if slot in wanted:
            offsets[slot] = at
            at += PARTS[slot](*sz, cell.gates)
    for slot in (H0, C0)[:cell.states]:
        offsets[slot] = at
        at += d * b * h
    offsets["scratch"] = at
    offsets["size"] = at + 2 * cell.gates * h
    return offsets


def grad(cell: Cell, node, g):
    """One BPTT node for every gradient; the training form of the node keeps the gates."""
    sz = sizes(node, g.shape)
    wanted = [slot for slot in (X, W, R, B) if g.needs(slot)]
    ins = list(node.inputs) + [""] * (C0 + 1 - len(node.inputs))
    dys = [(g.dy(k) or "") if node.outputs[k] else "" for k in range(1 + cell.states)]
    trace = ""
    if cell.trace:
        node.op, node.domain = f"{cell.op}Train", TRAIN_DOMAIN
        trace = g.output(1 + cell.states, (sz[4], sz[0], sz[1], cell.trace * sz[3]), f"{cell.op} gates per step")
    offsets = layout(cell, sz, wanted)
    packed = g.op(f"{cell.op}Grad", [ins[X], ins[W], ins[R], ins[H0], ins[C0], node.outputs[0], trace, *dys],
                  like=None, attrs={**node.attrs, "parts": wanted}, shape=(offsets["size"],))
    for slot in [*wanted, *(k for k in (H0, C0)[:cell.states] if g.needs(k))]:
        g.give(slot, g.op("RecurrentGradPart", [packed], like=node.inputs[slot], attrs={"offset": offsets[slot]}))


def emit_grad(cell: Cell, node, c):
    """<Op>Grad's inputs: X, W, R, initial_h, initial_c, Y, trace, dY, dY_h(, dY_c); its attributes
    the forward node's plus `parts`, the input slots whose gradients it packs."""
    x, w, r, h0, c0, y, trace, *dy = [c.ptr(t) if t else "NULL" for t in node.inputs]
    offsets = layout(cell, sizes(node, c.shape), list(node.attrs["parts"]))
    out = c.ptr(node.outputs[0])
    part = {slot: f"{out} + {offsets[slot]}" if slot in offsets else "NULL" for slot in (X, W, R, B, H0, C0)}
    args = [dims(cell, node, c, True), x, w, r, h0, c0, y, trace, *dy, *(["NULL"] if cell.states == 1 else []),
            *(part[k] for k in (X, W, R, B, H0)), part[C0] if cell.states == 2 else "NULL",
            f"{out} + {offsets['scratch']}"]
    return f"mt_rec_backward({', '.join(args)});"


def emit_part(node, c, scale="1.0f", keep="0.0f"):
    return (f"mt_rec_part({c.ptr(node.inputs[0])} + {node.attrs['offset']}, {c.ptr(node.outputs[0])}, "
            f"{c.size(node.outputs[0])}, {scale}, {keep});")


def register_recurrent(cell: Cell) -> None:
    register(cell.op, kernel="recurrent.h", emit=lambda node, c: emit_forward(cell, node, c, False),
             grad=lambda node, g: grad(cell, node, g), diff_inputs=(X, W, R, B, H0, C0)[:4 + cell.states],
             bias_inputs=(B,), check=lambda node, graph: check(cell, node, graph))
    if cell.trace:
        register_train_op(f"{cell.op}Train", kernel="recurrent.h",
                          emit=lambda node, c: emit_forward(cell, node, c, True))
    register_train_op(f"{cell.op}Grad", kernel="recurrent.h", emit=lambda node, c: emit_grad(cell, node, c))


register_train_op("RecurrentGradPart", kernel="recurrent.h", emit=emit_part, emit_update=emit_part)
