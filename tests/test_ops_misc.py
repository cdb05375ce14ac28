"""BatchNormalization, Clip, HardSigmoid, HardSwish, Concat, Transpose, Squeeze, Unsqueeze,
ReduceMean and Pad: forward and gradients in the generated C against PyTorch (see test_ops.run_case),
plus the attributes each op refuses."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import helper

from codegen import loader
from codegen.errors import UnsupportedError
from helpers import onnx_model
from test_ops import rand, run_case

# run_case lists its consts as node inputs; a const of this name stands for an omitted optional
# input in the middle (e.g. Clip without min, Pad with axes but no constant_value).
OMITTED = "omitted"


@pytest.fixture
def omit(monkeypatch):
    """While active, node inputs named OMITTED become "" (the unused initializer is dropped)."""
    make_node = helper.make_node

    def patched(op, inputs, outputs, **kwargs):
        return make_node(op, ["" if i == OMITTED else i for i in inputs], outputs, **kwargs)

    monkeypatch.setattr(helper, "make_node", patched)


def optional(**inputs):
    """run_case consts for optional inputs, in order: trailing None ones are dropped, inner ones
    omitted (with the `omit` fixture); floats become float32 scalars."""
    while inputs and list(inputs.values())[-1] is None:
        inputs.popitem()
    return {OMITTED if v is None else name: v if isinstance(v, np.ndarray) else f32(v or 0.0)
            for name, v in inputs.items()}


def i64(*values):
    return np.array(values, np.int64)


def f32(value):
    return np.array(value, np.float32)


# ---- BatchNormalization ----
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 4, 4)], ids=str)
@pytest.mark.parametrize("eps", [None, 1e-3])
def test_batch_normalization(tmp_path, shape, eps):
    c = shape[1]
    mean, var = rand(c), rand(c, low=0.2, high=2.0)
    attrs = {} if eps is None else {"epsilon": eps}

    def ref(x, w, b):
        return F.batch_norm(x, torch.tensor(mean), torch.tensor(var), w, b, training=False,
                            eps=1e-5 if eps is None else eps)

    operands = [rand(*shape, low=-2, high=2), rand(c, low=0.5, high=1.5), rand(c)]
    run_case(tmp_path, "BatchNormalization", operands, ref, attrs, consts={"mean": mean, "var": var})


# ---- Clip and the hard activations ----
CLIPS = {"both": (-0.5, 0.7), "min_only": (0.1, None), "max_only": (None, -0.2), "none": (None, None),
         "relu6": (0.0, 6.0), "min_above_max": (0.5, -0.5)}


@pytest.mark.parametrize("bounds", CLIPS.values(), ids=CLIPS.keys())
@pytest.mark.parametrize("shape", [(7,), (3, 4)], ids=str)
def test_clip(tmp_path, omit, shape, bounds):
    lo, hi = bounds
    scale = 8.0 if hi == 6.0 else 1.5
    run_case(tmp_path, "Clip", [rand(*shape, low=-scale, high=scale)],
             lambda x: x * 1 if lo is hi is None else torch.clamp(x, lo, hi), consts=optional(min=lo, max=hi))


@pytest.mark.parametrize("attrs", [{}, {"alpha": 1 / 6}, {"alpha": 0.3, "beta": 0.2}], ids=str)
@pytest.mark.parametrize("shape", [(9,), (2, 3, 4)], ids=str)
def test_hard_sigmoid(tmp_path, shape, attrs):
    alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
    run_case(tmp_path, "HardSigmoid", [rand(*shape, low=-5, high=5)],
             lambda x: torch.clamp(alpha * x + beta, 0, 1), attrs)


@pytest.mark.parametrize("shape", [(9,), (2, 3, 4)], ids=str)
def test_hard_swish(tmp_path, shape):
    run_case(tmp_path, "HardSwish", [rand(*shape, low=-5, high=5)], F.hardswish)


@pytest.mark.parametrize("op, attrs, consts, fn", [
    ("Clip", {}, {"min": f32(0), "max": f32(6)}, F.relu6),
    ("Clip", {}, {"min": f32(-3), "max": f32(3)}, lambda x: F.hardtanh(x, -3, 3)),
    ("HardSigmoid", {"alpha": 1 / 6}, {}, F.hardsigmoid),
    ("HardSwish", {}, {}, F.hardswish)], ids=["relu6", "hardtanh", "hardsigmoid", "hardswish"])
def test_gradient_at_kinks(tmp_path, op, attrs, consts, fn):
    """Inputs exactly at the kinks get PyTorch's one-sided choice of gradient."""
    x = f32([[-7, -3, 0, 3, 6, 7], [-3.5, -1, 0.5, 2.5, 5.5, 6.5]])
    run_case(tmp_path, op, [x], fn, attrs, consts=consts)


# ---- shape-moving ops ----
# run_case's trainer takes dim 0 of the output as the batch: every case keeps the input's dim 0.
@pytest.mark.parametrize("shapes, axis", [
    (((2, 3), (2, 5)), 1), (((1, 3, 4), (1, 2, 4)), 1), (((2, 3, 4), (2, 3, 1)), -1),
    (((2, 2, 4), (2, 3, 4), (2, 1, 4)), -2)], ids=str)
def test_concat(tmp_path, shapes, axis):
    run_case(tmp_path, "Concat", [rand(*s) for s in shapes], lambda *ts: torch.cat(ts, axis), {"axis": axis})


@pytest.mark.parametrize("shape, perm", [((3, 3), None), ((2, 3, 2), None), ((2, 3, 4), [0, 2, 1]),
                                         ((2, 3, 2), [2, 0, 1]), ((2, 3, 4, 5), [0, 3, 1, 2])], ids=str)
def test_transpose(tmp_path, shape, perm):
    order = perm or list(reversed(range(len(shape))))
    run_case(tmp_path, "Transpose", [rand(*shape)], lambda t: t.permute(order),
             {} if perm is None else {"perm": perm})


@pytest.mark.parametrize("axes", [[1], [-1], [1, 3], None], ids=str)
def test_squeeze(tmp_path, axes):
    dims = [d + 4 if d < 0 else d for d in axes or [1, 3]]
    run_case(tmp_path, "Squeeze", [rand(2, 1, 3, 1)], lambda t: t.squeeze(dims),
             consts={} if axes is None else {"axes": i64(*axes)})


@pytest.mark.parametrize("x_shape, axes, shape", [
    ((1, 3), [0], (1, 1, 3)), ((2, 3), [-1], (2, 3, 1)), ((2, 3), [1, 3], (2, 1, 3, 1)),
    ((1, 3), [-4, 2], (1, 1, 1, 3))], ids=str)
def test_unsqueeze(tmp_path, x_shape, axes, shape):
    run_case(tmp_path, "Unsqueeze", [rand(*x_shape)], lambda t: t.reshape(shape), consts={"axes": i64(*axes)})


@pytest.mark.parametrize("shape, axes, keepdims", [
    ((2, 3, 4), [1], 0), ((2, 3, 4), [1], 1), ((2, 3, 4), [-1], 0), ((2, 3, 4), [-2, 2], 1),
    ((1, 3, 4), [0, 2], 1), ((1, 3, 4), None, 1), ((2, 3, 4, 5), [2, 3], 0), ((2, 3, 4, 5), [-1, -2], 1)],
    ids=str)
def test_reduce_mean(tmp_path, shape, axes, keepdims):
    dims = axes or list(range(len(shape)))
    run_case(tmp_path, "ReduceMean", [rand(*shape)], lambda t: t.mean(dims, keepdim=bool(keepdims)),
             {"keepdims": keepdims}, consts={} if axes is None else {"axes": i64(*axes)})


def test_reduce_mean_noop_with_empty_axes(tmp_path):
    run_case(tmp_path, "ReduceMean", [rand(2, 3)], lambda t: t * 1, {"noop_with_empty_axes": 1})


def torch_pads(pads: list[int]) -> list[int]:
    """ONNX [begins..., ends...] -> F.pad's (begin, end) pairs from the last dim backwards."""
    rank = len(pads) // 2
    return [p for d in reversed(range(rank)) for p in (pads[d], pads[rank + d])]


@pytest.mark.parametrize("shape, pads, value", [
    ((2, 3), [1, 2, -1, 1], None), ((2, 3, 4), [0, 1, 2, 0, 1, 3], 1.5), ((2, 3, 4), [0, 0, 1, 0, 0, 0], -2.0),
    ((2, 5, 4), [0, -1, 1, 0, -2, -1], None), ((3, 4), [0, -2, 0, -1], 0.5)], ids=str)
def test_pad(tmp_path, shape, pads, value):
    consts = {"pads": i64(*pads)} | ({} if value is None else {"value": f32(value)})
    run_case(tmp_path, "Pad", [rand(*shape)], lambda t: F.pad(t, torch_pads(pads), value=value or 0.0),
             consts=consts)


@pytest.mark.parametrize("axes, pads", [([-1], [2, 1]), ([0, 2], [1, 0, -1, 2])], ids=str)
def test_pad_axes(tmp_path, omit, axes, pads):
    full = [0] * 6
    for i, a in enumerate(axes):
        full[a % 3], full[3 + a % 3] = pads[i], pads[len(axes) + i]
    run_case(tmp_path, "Pad", [rand(2, 3, 4)], lambda t: F.pad(t, torch_pads(full)),
             consts=optional(pads=i64(*pads), value=None, axes=i64(*axes)))


# ---- refusals ----
REFUSED = {
    "pad_reflect": (helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect"), {"pads": i64(0, 1, 0, 1)},
                    [2, 5], "mode 'reflect'"),
    "pad_edge": (helper.make_node("Pad", ["x", "pads"], ["y"], mode="edge"), {"pads": i64(0, 1, 0, 1)},
                 [2, 5], "mode 'edge'"),
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_refused(tmp_path, case):
    node, inits, y_shape, message = case
    onnx_model([node], {"x": [2, 3]}, {"y": y_shape}, inits, path=tmp_path / "m.onnx")
    with pytest.raises(UnsupportedError, match=message):
        loader.load(tmp_path / "m.onnx")


def test_clip_computed_bound_refused(tmp_path):
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
             helper.make_node("Clip", ["x", "m"], ["y"])]
    onnx_model(nodes, {"x": [2, 3]}, {"y": [2, 3]}, {}, path=tmp_path / "m.onnx")
    with pytest.raises(UnsupportedError, match="computed"):
        loader.load(tmp_path / "m.onnx")
