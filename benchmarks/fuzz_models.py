"""Mutation fuzzing of `mcutrain generate`: valid models mutated into broken ones (wrong shapes,
dtypes and values, missing inputs, cycles, dangling names, huge dims, unknown ops and domains, bad
attributes, opsets, flipped bytes, truncated files). Every case must end in C that compiles, or in
one of our typed errors (exit 2): never a traceback, a C compile error or a hang; and every model we
accept must give onnxruntime's forward (rtol = atol = 1e-4) wherever onnxruntime runs it.
The mutator and the runner are shared with tests/test_fuzz.py (hypothesis picks there, a seeded
generator here).
Usage: python -m benchmarks.fuzz_models [--cases 1000] [--seed 0] [--timeout 120] [--keep DIR]"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference, version_converter

RTOL = ATOL = 1e-4  # the generated C sums in other orders than onnxruntime (float32)
# onnxruntime has no kernels for older versions of some ops (NOT_IMPLEMENTED for Gemm-6): it gets
# such models upgraded to this opset by onnx's version converter (which we use too).
ORT_MIN_OPSET = 7
N = helper.make_node


def _model(nodes, inputs: dict, output: str, inits: dict) -> onnx.ModelProto:
    """A float32 model at opset 18; the output's shape is the one shape inference finds."""
    graph = helper.make_graph(
        nodes, "fuzz", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.graph.output[0].CopyFrom(shape_inference.infer_shapes(model, strict_mode=True).graph.output[0])
    return model


def _floats(rng, *shape) -> np.ndarray:
    return rng.normal(size=shape).astype(np.float32)


def mlp(rng) -> onnx.ModelProto:
    nodes = [N("Gemm", ["x", "W1", "b1"], ["h"], transB=1, name="fc1"), N("Relu", ["h"], ["r"], name="relu"),
             N("Gemm", ["r", "W2", "b2"], ["y"], transB=1, name="fc2")]
    return _model(nodes, {"x": [2, 6]}, "y", {"W1": _floats(rng, 5, 6), "b1": _floats(rng, 5),
                                               "W2": _floats(rng, 3, 5), "b2": _floats(rng, 3)})


def cnn(rng) -> onnx.ModelProto:
    nodes = [N("Conv", ["x", "K", "kb"], ["c"], pads=[1, 1, 1, 1], name="conv"), N("Relu", ["c"], ["r"], name="relu"),
             N("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             N("Flatten", ["p"], ["f"], name="flat"), N("Gemm", ["f", "W", "b"], ["y"], transB=1, name="fc")]
    return _model(nodes, {"x": [1, 2, 6, 6]}, "y", {"K": _floats(rng, 4, 2, 3, 3), "kb": _floats(rng, 4),
                                                     "W": _floats(rng, 3, 36), "b": _floats(rng, 3)})


def blocks(rng) -> onnx.ModelProto:
    """Most of the other ops: padded grouped conv, batchnorm, ReLU6, pooling, reshapes, MatMul,
    broadcasting, a reduction, Concat."""
    nodes = [N("Pad", ["x", "pads"], ["p"], mode="constant", name="pad"), N("Conv", ["p", "K", "kb"], ["c"], group=3, name="dw"),
             N("BatchNormalization", ["c", "s", "o", "mu", "var"], ["n"], name="bn"),
             N("Clip", ["n", "lo", "hi"], ["r"], name="relu6"),
             N("AveragePool", ["r"], ["a"], kernel_shape=[2, 2], strides=[2, 2], auto_pad="VALID", name="avg"),
             N("Reshape", ["a", "shape"], ["t"], name="reshape"), N("Transpose", ["t"], ["u"], perm=[0, 2, 1], name="tr"),
             N("MatMul", ["u", "M"], ["v"], name="mm"), N("Add", ["v", "ab"], ["w"], name="add"),
             N("Sigmoid", ["w"], ["sg"], name="sig"), N("Mul", ["w", "sg"], ["sw"], name="silu"),
             N("ReduceMean", ["sw", "axes"], ["rm"], keepdims=0, name="mean"), N("Tanh", ["rm"], ["th"], name="tanh"),
             N("Concat", ["rm", "th"], ["cc"], axis=1, name="cat"), N("Sub", ["cc", "sb"], ["sd"], name="sub"),
             N("Div", ["sd", "two"], ["dv"], name="div"), N("LeakyRelu", ["dv"], ["lr"], alpha=0.1, name="leaky"),
             N("Gemm", ["lr", "W", "b"], ["g"], transB=1, name="fc"), N("LogSoftmax", ["g"], ["y"], axis=1, name="logp")]
    inits = {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "K": _floats(rng, 6, 1, 3, 3),
             "kb": _floats(rng, 6), "s": _floats(rng, 6), "o": _floats(rng, 6), "mu": _floats(rng, 6),
             "var": np.abs(_floats(rng, 6)) + 0.5, "lo": np.float32(0), "hi": np.float32(6),
             "shape": np.array([2, 6, 4], np.int64), "M": _floats(rng, 6, 5), "ab": _floats(rng, 5),
             "axes": np.array([1], np.int64), "sb": _floats(rng, 10), "two": np.float32(2),
             "W": _floats(rng, 3, 10), "b": _floats(rng, 3)}
    return _model(nodes, {"x": [2, 3, 4, 4]}, "y", inits)


def sequence(rng) -> onnx.ModelProto:
    """A 1-D conv net over a sequence: Unsqueeze/Squeeze, 1-D windows, the hard activations, Softmax."""
    nodes = [N("Unsqueeze", ["x", "ax1"], ["u"], name="unsq"),
             N("Conv", ["u", "K"], ["c"], pads=[1, 1], strides=[1], name="conv1d"),
             N("MaxPool", ["c"], ["p"], kernel_shape=[2], strides=[2], name="pool"),
             N("HardSwish", ["p"], ["hs"], name="hswish"), N("GlobalAveragePool", ["hs"], ["gp"], name="gap"),
             N("Squeeze", ["gp", "ax2"], ["sq"], name="sq"), N("Dropout", ["sq"], ["d"], name="drop"),
             N("Gemm", ["d", "W", "b"], ["g"], transB=1, name="fc"), N("HardSigmoid", ["g"], ["h"], name="hsig"),
             N("Identity", ["h"], ["i"], name="id"), N("Softmax", ["i"], ["y"], axis=-1, name="softmax")]
    inits = {"ax1": np.array([1], np.int64), "K": _floats(rng, 4, 1, 3), "ax2": np.array([2], np.int64),
             "W": _floats(rng, 6, 4), "b": _floats(rng, 6)}
    return _model(nodes, {"x": [2, 8]}, "y", inits)


BASES = [base(np.random.default_rng(i)) for i, base in enumerate((mlp, cnn, blocks, sequence))]
DTYPES = [TensorProto.UNDEFINED, TensorProto.INT64, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BOOL,
          TensorProto.STRING]
DIMS = [0, -1, 1, 7, 2**20, 2**31, 10**12]
OPSETS = [0, 1, 6, 11, 17, 21, onnx.defs.onnx_opset_version() + 1, 10000]  # 21: onnxruntime >= 1.18 runs it
INTS = [-3, -1, 0, 1, 2, 3, 7]
FLOATS = [-1.0, 0.0, 0.5, 2.0]
STRINGS = [b"SAME_UPPER", b"SAME_LOWER", b"VALID", b"NOTSET", b"constant", b"reflect", b"edge", b"bogus"]

Pick = Callable[[int], int]  # pick(n): an index below n (0 if n == 0)


def _one(seq, pick: Pick):
    return seq[pick(len(seq))]


def _input_dim(model, pick: Pick) -> None:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if dims:
        dims[pick(len(dims))].dim_value = _one(DIMS, pick)


def _input_dtype(model, pick: Pick) -> None:
    model.graph.input[0].type.tensor_type.elem_type = _one(DTYPES, pick)


def _opset(model, pick: Pick) -> None:
    model.opset_import[0].version = _one(OPSETS, pick)


def _no_output(model, pick: Pick) -> None:
    del model.graph.output[:]


def _drop_node(model, pick: Pick) -> None:
    del model.graph.node[pick(len(model.graph.node))]


def _value(init: onnx.TensorProto) -> np.ndarray | None:
    """The initializer's value; None once an earlier mutation broke it."""
    try:
        return numpy_helper.to_array(init).copy()
    except ValueError:
        return None


def _init_shape(init: onnx.TensorProto, pick: Pick) -> None:
    """Dims that no longer match the data."""
    init.dims[:] = list(init.dims)[:-1] or [2, 2]


def _init_resize(init: onnx.TensorProto, pick: Pick) -> None:
    """A nearby shape (one dim changed, a dim added or the first dropped) with valid data."""
    shape, how = list(init.dims), pick(3)
    if how == 0 and shape:
        shape[pick(len(shape))] = 1 + pick(7)
    elif how == 1:
        shape.insert(pick(len(shape) + 1), 1 + pick(3))
    else:
        shape = shape[1:]
    value = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) % 5 - 1
    init.CopyFrom(numpy_helper.from_array(value.astype(helper.tensor_dtype_to_np_dtype(init.data_type)), init.name))


def _init_value(init: onnx.TensorProto, pick: Pick) -> None:
    """One element of an integer initializer (axes, pads, a shape) changed."""
    value = _value(init)
    if value is not None and value.dtype.kind == "i" and value.size:
        value.reshape(-1)[pick(value.size)] = _one(INTS, pick)
        init.CopyFrom(numpy_helper.from_array(value, init.name))


def _init_dtype(init: onnx.TensorProto, pick: Pick) -> None:
    value = _value(init)
    if value is not None:
        dtype = _one([np.float64, np.int64, np.float16, np.int32], pick)
        init.CopyFrom(numpy_helper.from_array(value.astype(dtype), init.name))


def _drop_input(model, node, pick: Pick) -> None:
    del node.input[pick(len(node.input))]


def _dangling(model, node, pick: Pick) -> None:
    node.input[pick(len(node.input))] = "nowhere"


def _cycle(model, node, pick: Pick) -> None:
    node.input[0] = model.graph.node[-1].output[0]


def _duplicate_output(model, node, pick: Pick) -> None:
    g = model.graph
    names = [i.name for i in g.input] + [i.name for i in g.initializer] + [o for n in g.node for o in n.output]
    node.output[0] = _one(names, pick)


def _op_type(model, node, pick: Pick) -> None:
    node.op_type = _one(["Cos", "Foo", "", "Gemm", "Conv", "Relu", "Identity"], pick)


def _domain(model, node, pick: Pick) -> None:
    node.domain = _one(["com.example", "ai.mcutrain", "ai.onnx.ml", "com.microsoft"], pick)


def _attribute(model, node, pick: Pick) -> None:
    """An extra attribute, possibly one the op does not have or a duplicate."""
    node.attribute.append(helper.make_attribute(
        _one(["transB", "strides", "pads", "kernel_shape", "group", "alpha", "axis", "bogus"], pick),
        _one([[0, 0], [-1, 5], [99, 99, 99, 99], 0, -3, 2.5, 10**9], pick)))


def _attr_value(model, node, pick: Pick) -> None:
    """An existing attribute with another value of its type."""
    if not node.attribute:
        return
    attr = node.attribute[pick(len(node.attribute))]
    value = helper.get_attribute_value(attr)
    if attr.type == onnx.AttributeProto.INTS and value:
        value[pick(len(value))] = _one(INTS, pick)
    elif attr.type in (onnx.AttributeProto.INT, onnx.AttributeProto.FLOAT, onnx.AttributeProto.STRING):
        value = _one({onnx.AttributeProto.INT: INTS, onnx.AttributeProto.FLOAT: FLOATS}.get(attr.type, STRINGS), pick)
    attr.CopyFrom(helper.make_attribute(attr.name, value))


GRAPH_MUTATIONS = {"input_dim": _input_dim, "input_dtype": _input_dtype, "opset": _opset, "no_output": _no_output,
                   "drop_node": _drop_node}
INIT_MUTATIONS = {"init_shape": _init_shape, "init_resize": _init_resize, "init_value": _init_value,
                  "init_dtype": _init_dtype}
NODE_MUTATIONS = {"drop_input": _drop_input, "dangling": _dangling, "cycle": _cycle,
                  "duplicate_output": _duplicate_output, "op_type": _op_type, "domain": _domain,
                  "attribute": _attribute, "attr_value": _attr_value}


def mutate(model: onnx.ModelProto, kind: str, pick: Pick) -> None:
    """One mutation of `kind`, in place, on the whole model, a picked initializer or a picked node
    (none when there is nothing to pick)."""
    g = model.graph
    if kind in GRAPH_MUTATIONS and g.node:
        GRAPH_MUTATIONS[kind](model, pick)
    elif kind in INIT_MUTATIONS and g.initializer:
        INIT_MUTATIONS[kind](g.initializer[pick(len(g.initializer))], pick)
    elif kind in NODE_MUTATIONS and g.node:
        node = g.node[pick(len(g.node))]
        if node.input:
            NODE_MUTATIONS[kind](model, node, pick)


def _corrupt(raw: bytes, kind: str, pick: Pick) -> bytes:
    """A byte-level mutation of the serialized model."""
    if not raw and kind != "junk":  # a truncation left nothing to flip or cut
        return raw
    if kind == "flip":
        at = pick(len(raw))
        return raw[:at] + bytes([raw[at] ^ (1 + pick(255))]) + raw[at + 1:]
    if kind == "truncate":
        return raw[:pick(len(raw))]
    return raw + bytes(pick(256) for _ in range(1 + pick(64)))  # junk


MODEL_KINDS = [*GRAPH_MUTATIONS, *INIT_MUTATIONS, *NODE_MUTATIONS]
BYTE_KINDS = ["flip", "truncate", "junk"]
KINDS = MODEL_KINDS + BYTE_KINDS


def mutated(base: int, kinds: list[str], pick: Pick) -> bytes:
    """BASES[base] with `kinds` applied: model mutations first, then byte mutations."""
    model = onnx.ModelProto()
    model.CopyFrom(BASES[base])
    for kind in kinds:
        if kind in MODEL_KINDS:
            mutate(model, kind, pick)
    raw = model.SerializeToString()
    for kind in kinds:
        if kind in BYTE_KINDS:
            raw = _corrupt(raw, kind, pick)
    return raw


@dataclass(frozen=True)
class Outcome:
    kind: str  # accepted | refused | one of FAILURES
    details: str = ""
    compared: bool = False  # accepted and checked against onnxruntime's forward
    ort_refusal: str = ""  # accepted, but onnxruntime refuses the model: its first line


def run(model: Path, folder: Path, compare: bool) -> Outcome:
    """`mcutrain generate` on `model`: exit 0 with C that compiles (and, with `compare`, predict
    equal to onnxruntime's forward where it runs the model), or exit 2 with one error message."""
    from typer.testing import CliRunner

    from codegen.cli import app

    out = folder / "out"
    result = CliRunner().invoke(app, ["generate", str(model), "-o", str(out), "--loss", "mse"])
    if result.exit_code == 2 and isinstance(result.exception, SystemExit) and "error:" in result.output \
            and "Traceback" not in result.output and not out.exists():
        return Outcome("refused", result.output)
    if result.exit_code != 0:
        details = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else ""
        return Outcome("traceback", f"exit {result.exit_code}\n{result.output}\n{details}")
    cc = subprocess.run(["cc", "-std=c99", "-fsyntax-only", "-Werror=overflow", *map(str, out.glob("*.c"))],
                        cwd=out, capture_output=True, text=True)
    if cc.returncode:
        return Outcome("compile_error", cc.stderr[-2000:])
    return compare_with_ort(model, out) if compare else Outcome("accepted")


def _for_ort(model: Path) -> bytes:
    from codegen.loader import default_opset

    proto = onnx.load(str(model))
    if default_opset(proto) < ORT_MIN_OPSET:
        proto = version_converter.convert_version(proto, ORT_MIN_OPSET)
    return proto.SerializeToString()


def _ort_forward(model: Path, name: str, x: np.ndarray) -> tuple[np.ndarray | None, str]:
    """onnxruntime's output `name` for input x (graph optimizations off: the reference semantics),
    or None and why onnxruntime refuses the model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(_for_ort(model), options, providers=["CPUExecutionProvider"])
        return session.run([name], {session.get_inputs()[0].name: x})[0], ""
    except Exception as e:
        return None, (str(e).strip().splitlines() or [type(e).__name__])[0]


def compare_with_ort(model: Path, out: Path) -> Outcome:
    """Build the host trainer and compare its predict with onnxruntime on one seeded input."""
    import codegen
    from codegen.errors import BuildError

    try:
        trainer = codegen.load_host(out)
    except BuildError as e:
        return Outcome("compile_error", str(e)[-2000:])
    manifest = json.loads((out / "mcutrain.json").read_text())
    x = np.random.default_rng(0).normal(size=manifest["inputs"][0]["shape"]).astype(np.float32)
    theirs, why = _ort_forward(model, manifest["output"]["name"], x)
    if theirs is None:
        return Outcome("accepted", ort_refusal=why)
    ours = trainer.predict(x)
    try:
        np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)
    except AssertionError as e:
        return Outcome("mismatch", str(e))
    return Outcome("accepted", compared=True)


def pick_from(rng: np.random.Generator) -> Pick:
    return lambda n: int(rng.integers(n)) if n > 0 else 0


def case(seed: int, index: int) -> tuple[int, list[str], Pick]:
    """Case `index` of a run: its own generator, so any case can be replayed alone."""
    rng = np.random.default_rng([seed, index])
    pick = pick_from(rng)
    base = pick(len(BASES))
    kinds = [KINDS[pick(len(KINDS))] for _ in range(1 + pick(2))]
    return base, kinds, pick


def run_case(seed: int, index: int) -> Outcome:
    """Worker side: case `index`, in a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        path.write_bytes(mutated(*case(seed, index)))
        return run(path, Path(tmp), compare=True)


def _worker_init(cache: str) -> None:
    os.environ["MCUTRAIN_CACHE"] = cache  # host builds: a throwaway cache, not the user's


class Runner:
    """One worker process at a time; a case that overruns the timeout is a hang, and the worker
    is replaced."""

    def __init__(self, cache: str, timeout: float):
        self.cache, self.timeout, self.pool = cache, timeout, None

    def __call__(self, seed: int, index: int) -> Outcome:
        if self.pool is None:
            self.pool = multiprocessing.get_context("spawn").Pool(1, _worker_init, (self.cache,))
        try:
            return self.pool.apply_async(run_case, (seed, index)).get(self.timeout)
        except multiprocessing.TimeoutError:
            self.close()
            return Outcome("hang", f"no result after {self.timeout} s")

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool = None


FAILURES = ("traceback", "compile_error", "hang", "mismatch")


def report(counts: Counter, refusals: Counter) -> str:
    cases = sum(counts[k] for k in ("accepted", "refused", *FAILURES))
    lines = [f"cases {cases}, accepted (C compiled) {counts['accepted']} (onnxruntime's forward matched on "
             f"{counts['compared']}, onnxruntime refuses {counts['ort_refused']}), refused {counts['refused']}, "
             f"tracebacks {counts['traceback']}, C compile errors {counts['compile_error']}, hangs {counts['hang']}, "
             f"ORT mismatches {counts['mismatch']}"]
    lines += [f"  onnxruntime refuses {n} x: {why}" for why, n in refusals.most_common()]
    return "\n".join(lines)


def fuzz(seed: int, cases: int, timeout: float, keep: Path | None) -> tuple[Counter, Counter]:
    """Outcome counts, and onnxruntime's reasons for refusing models we accept; failures go to
    stderr (and their models to `keep`)."""
    counts, refusals = Counter(), Counter()
    with tempfile.TemporaryDirectory() as cache:
        runner = Runner(cache, timeout)
        for i in range(cases):
            outcome = runner(seed, i)
            counts.update([outcome.kind] + ["compared"] * outcome.compared + ["ort_refused"] * bool(outcome.ort_refusal))
            refusals.update([outcome.ort_refusal] if outcome.ort_refusal else [])
            if outcome.kind in FAILURES or outcome.ort_refusal:
                base, kinds, _ = case(seed, i)
                print(f"case {i}: base {base}, {' + '.join(kinds)}: {outcome.kind} {outcome.ort_refusal}\n"
                      f"{outcome.details}", file=sys.stderr)
                if keep:
                    (keep / f"case{i}.onnx").write_bytes(mutated(*case(seed, i)))
            if (i + 1) % 100 == 0:
                print(f"{i + 1} cases", file=sys.stderr, flush=True)
        runner.close()
    return counts, refusals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per case before it counts as a hang")
    parser.add_argument("--keep", type=Path, help="folder to save the failing models in")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    counts, refusals = fuzz(args.seed, args.cases, args.timeout, args.keep)
    print(report(counts, refusals))
    sys.exit(1 if any(counts[k] for k in (*FAILURES, "ort_refused")) else 0)


if __name__ == "__main__":
    main()
