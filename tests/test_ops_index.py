"""Gather, GatherND, Slice, Split, Expand, Tile, Where and Cast: forward and gradients in the generated C
against PyTorch autograd (test_ops.run_case) on random shapes and constant indices / starts /
sizes / repeats / conditions drawn per case (negative and out-of-range values, negative steps,
repeated indices, broadcasting), plus what they refuse."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from codegen import loader, ops
from codegen.errors import ShapeError, UnsupportedError
from helpers import onnx_model
from test_ops import rand, run_case

CASES = np.random.default_rng(16)  # draws the random attributes; test_ops.RNG the values
BIG = 2**63 - 1  # the exporters' "to the end"


def i64(*values):
    return np.array(values, np.int64)


def shape_of(rank: int, low: int = 1, high: int = 5) -> tuple[int, ...]:
    return tuple(int(d) for d in CASES.integers(low, high, size=rank))


class Case:
    """One op application: its float operands, its node(s) from input names to output `y` (the
    constants named by `name(key)`), its constants and the PyTorch reference."""

    def __init__(self, operands, nodes, consts, torch_fn):
        self.operands, self.nodes, self.consts, self.torch_fn = operands, nodes, consts, torch_fn


def run_cases(tmp_path, cases: list[Case], kernels="simd"):
    """Several cases side by side in one compiled model (a C build is the slow part): each output
    flattened, all concatenated into the model's output."""
    bounds = np.cumsum([0] + [len(c.operands) for c in cases])
    consts = {f"c{k}_{key}": v for k, c in enumerate(cases) for key, v in c.consts.items()}

    def build(inputs):
        nodes = []
        for k, c in enumerate(cases):
            nodes += c.nodes(inputs[bounds[k]:bounds[k + 1]], f"o{k}", lambda key, k=k: f"c{k}_{key}")
            nodes.append(helper.make_node("Flatten", [f"o{k}"], [f"f{k}"], axis=0))
        return nodes + [helper.make_node("Concat", [f"f{k}" for k in range(len(cases))], ["y"], axis=1)]

    def ref(*tensors):
        return torch.cat([c.torch_fn(*tensors[bounds[k]:bounds[k + 1]]).reshape(1, -1)
                          for k, c in enumerate(cases)], 1)

    run_case(tmp_path, "several", [v for c in cases for v in c.operands], ref, consts=consts, build=build,
             kernels=kernels)


def one_node(op, inputs_after, **attrs):
    """nodes(): op(operands..., constants listed in inputs_after) -> y; "" keeps a slot empty."""
    return lambda xs, y, name: [helper.make_node(op, [*xs, *(name(i) if i else "" for i in inputs_after)], [y],
                                                 **attrs)]


# ---- Gather ----
def gather_case(k: int) -> Case:
    """Data of rank 1-4, indices of rank 0-2 (negative and repeated ones), any axis written either way."""
    shape = shape_of(int(CASES.integers(1, 5)), 2)
    axis = int(CASES.integers(-len(shape), len(shape)))
    n = shape[axis]
    idx = CASES.integers(-n, n, size=shape_of(k % 3, 1, 4))

    def ref(x):
        a = axis % x.dim()
        flat = torch.tensor(idx.ravel() % n)
        return x.index_select(a, flat).reshape(*x.shape[:a], *idx.shape, *x.shape[a + 1:])

    return Case([rand(*shape)], one_node("Gather", ["i"], axis=axis), {"i": idx.astype(np.int64)}, ref)


def gather_nd_case(shape, idx) -> Case:
    """GatherND (batch_dims 0): each tuple along idx's last axis picks a block of x."""
    idx = np.array(idx, np.int64)
    return Case([rand(*shape)], one_node("GatherND", ["i"]), {"i": idx},
                lambda x: x[tuple(torch.tensor(idx[..., j] % x.shape[j]) for j in range(idx.shape[-1]))])


def test_gather(tmp_path):
    repeated = Case([rand(2, 3)], one_node("Gather", ["i"], axis=1), {"i": i64(1, -2, 1, 1)},
                    lambda x: x[:, [1, 1, 1, 1]])  # column 1 gets four columns of dy summed
    nd = [gather_nd_case((4, 2, 3), [[3], [1], [0], [0]]),  # the dynamo exporter's x[:, [3, 1, 0, 0]]
          gather_nd_case((3, 4), [[[0, -1], [2, 1]], [[2, 1], [-3, 0]]]), gather_nd_case((2, 3, 2), [[1, 2, -1]])]
    run_cases(tmp_path, [gather_case(k) for k in range(6)] + [repeated] + nd)


# ---- Slice ----
def slice_case(k: int) -> Case:
    """starts/ends anywhere from below to above the dims (clamped; sometimes +-2**63-1), steps of
    +-1..3, axes in any order and sign; every 4th case without axes and steps."""
    shape = shape_of(int(CASES.integers(1, 5)), 2, 6)
    rank = len(shape)
    default = k % 4 == 1
    axes = list(range(rank)) if default else [int(a) for a in CASES.permutation(rank)[:int(CASES.integers(1, rank + 1))]]
    starts, ends, steps = [], [], []
    for a in axes:
        while True:
            s, e = (int(v) for v in CASES.integers(-shape[a] - 2, shape[a] + 3, size=2))
            step = 1 if default else int(CASES.choice([-3, -2, -1, 1, 2, 3]))
            if len(range(shape[a])[s:e:step]):
                break
        starts.append(s if CASES.random() > 0.15 else (BIG if step < 0 else -BIG))
        ends.append(e if CASES.random() > 0.15 else (-BIG if step < 0 else BIG))
        steps.append(step)
    signed = [a - rank if CASES.random() < 0.5 else a for a in axes]

    def ref(x):
        for a, s, e, step in zip(axes, starts, ends, steps):
            picked = np.arange(x.shape[a])[s:e:step]  # numpy's slicing is the spec's
            x = x.index_select(a, torch.tensor(picked.copy()))
        return x

    given = {"s": i64(*starts), "e": i64(*ends)} | ({} if default else {"a": i64(*signed), "t": i64(*steps)})
    return Case([rand(*shape)], one_node("Slice", list(given)), given, ref)


@pytest.mark.parametrize("kernels", ["simd", "scalar"])
def test_slice(tmp_path, kernels):
    run_cases(tmp_path, [slice_case(k) for k in range(6)], kernels)


# ---- Split ----
def split_case(shape, axis, sizes, num_outputs, used) -> Case:
    """Split into len(used) parts (sizes: the `split` input), then Concat of the parts `used`
    lists in that order (None: a part nothing reads, so without gradient)."""
    count, n = len(used), shape[axis]
    chunk = -(-n // count)
    split = list(sizes) if sizes else [chunk] * (count - 1) + [n - chunk * (count - 1)]
    attrs = {"axis": axis, **({"num_outputs": num_outputs} if num_outputs else {})}

    def nodes(xs, y, name):
        parts = [f"{y}_{k}" for k in range(count)]
        return [helper.make_node("Split", [*xs, *([name("s")] if sizes else [])], parts, **attrs),
                helper.make_node("Concat", [parts[k] for k in used if k is not None], [y], axis=axis)]

    def ref(x):
        parts = torch.split(x, split, dim=axis)
        return torch.cat([parts[k] for k in used if k is not None], dim=axis)

    return Case([rand(*shape)], nodes, {"s": i64(*sizes)} if sizes else {}, ref)


def test_split(tmp_path):
    run_cases(tmp_path, [
        split_case((4, 6), 1, (2, 1, 3), None, (2, 0, 1)),
        split_case((5, 3), 0, (1, 4), None, (1, 0)),
        split_case((2, 3, 7), -1, None, 3, (0, 2, None)),  # 3, 3, 1; the middle part unused
        split_case((2, 6, 2), -2, None, 2, (1, 0))])  # torch.chunk as the dynamo exporter writes it


# ---- Expand, Tile, Where, Cast ----
def test_expand_tile(tmp_path):
    expand = [Case([rand(*x)], one_node("Expand", ["s"]), {"s": i64(*shape)},
                   lambda t, x=x, shape=shape: torch.broadcast_to(t, np.broadcast_shapes(x, shape)))
              for x, shape in [((3, 1), (2, 3, 4)), ((2, 1, 4), (3, 1)), ((4,), (1,)), ((1, 3), (2, 1, 3))]]
    tile = [Case([rand(*x)], one_node("Tile", ["r"]), {"r": i64(*r)}, lambda t, r=r: torch.tile(t, r))
            for x, r in [((3,), (2,)), ((2, 3), (2, 1)), ((2, 1, 3), (1, 4, 2)), ((1, 2), (3, 1)), ((2, 2), (1, 1))]]
    run_cases(tmp_path, expand + tile)


def where_case(cond, x, y) -> Case:
    flags = CASES.random(cond) < 0.5

    def nodes(xs, out, name):
        return [helper.make_node("Where", [name("c"), *xs], [out])]

    return Case([rand(*x), rand(*y)], nodes, {"c": flags}, lambda a, b: torch.where(torch.tensor(flags), a, b))


def test_where_cast(tmp_path):
    cast = Case([rand(2, 3)], one_node("Cast", [], to=TensorProto.FLOAT), {}, lambda x: x * 1)
    run_cases(tmp_path, [where_case((3, 4), (3, 4), (3, 4)), where_case((4,), (3, 4), (3, 1)),
                         where_case((2, 1, 4), (3, 1), (4,)), where_case((3, 4), (3, 4), ()), cast])
    assert ops.REGISTRY[("", "Cast")].view


# ---- refusals ----
REFUSED = {  # what the spec forbids and onnx's shape inference lets through (ShapeError), or what we do not run
    "gather_out_of_range": (helper.make_node("Gather", ["x", "i"], ["y"], axis=1), {"i": i64(0, 3)}, [2, 2],
                            ShapeError, r"index 3 outside \[-3, 3\)"),
    "gather_nd_out_of_range": (helper.make_node("GatherND", ["x", "i"], ["y"]), {"i": i64(1, -4)[None]}, [1],
                               ShapeError, r"index \[1, -4\] outside the leading dims \[2, 3\]"),
    "gather_nd_batch_dims": (helper.make_node("GatherND", ["x", "i"], ["y"], batch_dims=1), {"i": i64(0, 2)[:, None]},
                             [2], UnsupportedError, r"GatherND with batch_dims=1 \(only 0\)"),
    "split_sizes": (helper.make_node("Split", ["x", "s"], ["y", "u"], axis=1), {"s": i64(4, -1)}, [2, 4],
                    ShapeError, r"splitting 3 \(axis 1 of 'x'\) into \[4, -1\]"),
    "split_num_outputs": (helper.make_node("Split", ["x"], ["y", "u"], axis=1, num_outputs=3), {}, [2, 1],
                          ShapeError, r"into \[1, 1, 1\] for 2 outputs"),
    "tile_rank": (helper.make_node("Tile", ["x", "r"], ["y"]), {"r": i64(2, 2, 2, 2)}, [4, 4, 6, 6],
                  UnsupportedError, "whose tiled view has 8 dimensions"),
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_refused(tmp_path, case):
    node, inits, y_shape, error, message = case
    onnx_model([node], {"x": [2, 3, 3, 3] if node.op_type == "Tile" else [2, 3]}, {"y": y_shape}, inits,
               path=tmp_path / "m.onnx")
    with pytest.raises(error, match=message):
        loader.load(tmp_path / "m.onnx")


@pytest.mark.parametrize("to, name", [(TensorProto.INT64, "int64"), (TensorProto.DOUBLE, "double")])
def test_cast_refused(tmp_path, to, name):
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=to, name="c")], "cast",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", to, [2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "m.onnx"))
    with pytest.raises(UnsupportedError, match=f"'c' \\(Cast\\): Cast from float32 to {name} \\(only float32 to float32"):
        loader.load(tmp_path / "m.onnx")


@pytest.mark.parametrize("op, inputs, inits, outputs, what", [
    ("Gather", ["x", "i"], {"i": i64(0)}, {"y": [3]}, "indices"),
    ("Slice", ["x", "s", "e"], {"s": i64(0), "e": i64(1)}, {"y": [1, 3]}, "starts"),
    ("Split", ["x", "s"], {"s": i64(1, 2)}, {"y": [2, 1], "u": [2, 2]}, "split"),
    ("Expand", ["x", "s"], {"s": i64(2, 3)}, {"y": [2, 3]}, "shape"),
    ("Tile", ["x", "r"], {"r": i64(1, 2)}, {"y": [2, 6]}, "repeats"),
    ("Where", ["c", "x", "z"], {"c": np.array(True), "z": np.float32(0)}, {"y": [2, 3]}, "condition")])
def test_computed_input_refused(tmp_path, op, inputs, inits, outputs, what):
    """An index-like input computed at run time (no value at compile time) is refused, naming the
    node. A valid model reaches this only through ops refused earlier, so the test drops the
    input's value from a loaded graph."""
    node = helper.make_node(op, inputs, list(outputs), name="picky", **({"axis": 1} if op == "Split" else {}))
    onnx_model([node], {"x": [2, 3]}, outputs, inits, path=tmp_path / "m.onnx")
    graph = loader.load(tmp_path / "m.onnx")
    node = graph.nodes[0]
    graph.tensors[node.inputs[inputs.index(next(iter(inits)))]].value = None
    with pytest.raises(UnsupportedError, match=f"'picky'.*a computed \\(non-constant\\) {what} input"):
        ops.lookup(node).check(node, graph)
