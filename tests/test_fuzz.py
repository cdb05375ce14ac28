"""Fuzzing the compiler's input: valid models mutated into broken ones (wrong shapes and dtypes,
missing inputs, cycles, dangling names, huge dims, unknown ops and domains, bad attributes,
truncated files, random bytes). Every case must end in a build whose C compiles, or in one of our
typed errors (exit code 2): never a traceback, never a C compile error. Deterministic
(derandomized hypothesis, bounded examples)."""
from __future__ import annotations

import subprocess

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from onnx import TensorProto, helper
from typer.testing import CliRunner

from codegen.cli import app
from helpers import onnx_model

RNG = np.random.default_rng(0)


def mlp() -> onnx.ModelProto:
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1, name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "W2", "b2"], ["y"], transB=1, name="fc2")]
    return onnx_model(nodes, {"x": [2, 6]}, {"y": [2, 3]},
                      {"W1": RNG.normal(size=(5, 6)).astype(np.float32), "b1": np.zeros(5, np.float32),
                       "W2": RNG.normal(size=(3, 5)).astype(np.float32), "b2": np.zeros(3, np.float32)})


def cnn() -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "K", "kb"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "W", "b"], ["y"], transB=1, name="fc")]
    return onnx_model(nodes, {"x": [1, 2, 6, 6]}, {"y": [1, 3]},
                      {"K": RNG.normal(size=(4, 2, 3, 3)).astype(np.float32), "kb": np.zeros(4, np.float32),
                       "W": RNG.normal(size=(3, 36)).astype(np.float32), "b": np.zeros(3, np.float32)})


BASES = [mlp(), cnn()]
DTYPES = [TensorProto.INT64, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BOOL, TensorProto.STRING]
DIMS = [0, -1, 1, 7, 2**20, 2**31, 10**12]


def _name(model, draw_int) -> str:
    names = [i.name for i in model.graph.input] + [i.name for i in model.graph.initializer] + \
        [o for n in model.graph.node for o in n.output]
    return names[draw_int(len(names))]


def mutate(model: onnx.ModelProto, kind: str, pick) -> onnx.ModelProto:
    """One mutation of `kind`; `pick(n)` chooses an index below n."""
    g = model.graph
    node = g.node[pick(len(g.node))]
    if kind == "input_dim":
        dims = g.input[0].type.tensor_type.shape.dim
        dims[pick(len(dims))].dim_value = DIMS[pick(len(DIMS))]
    elif kind == "init_shape":
        init = g.initializer[pick(len(g.initializer))]
        init.dims[:] = list(init.dims)[:-1] or [2, 2]
    elif kind == "init_dtype":
        init = g.initializer[pick(len(g.initializer))]
        value = onnx.numpy_helper.to_array(init)
        dtype = [np.float64, np.int64, np.float16, np.int32][pick(4)]
        init.CopyFrom(onnx.numpy_helper.from_array(value.astype(dtype), init.name))
    elif kind == "input_dtype":
        g.input[0].type.tensor_type.elem_type = DTYPES[pick(len(DTYPES))]
    elif kind == "drop_input":
        del node.input[pick(len(node.input))]
    elif kind == "dangling":
        node.input[pick(len(node.input))] = "nowhere"
    elif kind == "cycle":
        node.input[0] = g.node[-1].output[0]
    elif kind == "duplicate_output":
        node.output[0] = _name(model, pick)
    elif kind == "op_type":
        node.op_type = ["Cos", "Foo", "", "Gemm", "Conv", "Relu", "Identity"][pick(7)]
    elif kind == "domain":
        node.domain = ["com.example", "ai.mcutrain", "ai.onnx.ml", "com.microsoft"][pick(4)]
    elif kind == "attribute":
        node.attribute.append(helper.make_attribute(
            ["transB", "strides", "pads", "kernel_shape", "group", "alpha", "axis", "bogus"][pick(8)],
            [[0, 0], [-1, 5], [99, 99, 99, 99], 0, -3, 2.5, 10**9][pick(7)]))
    elif kind == "no_output":
        del g.output[:]
    elif kind == "opset":
        model.opset_import[0].version = [1, 6, 11, 17, 25, 99][pick(6)]
    elif kind == "drop_node":
        del g.node[pick(len(g.node))]
    return model


KINDS = ["input_dim", "init_shape", "init_dtype", "input_dtype", "drop_input", "dangling", "cycle",
         "duplicate_output", "op_type", "domain", "attribute", "no_output", "opset", "drop_node"]


def check_outcome(path, tmp_path) -> None:
    """Exit 0 with C that compiles, or exit 2 with one error message; nothing else."""
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["generate", str(path), "-o", str(out), "--loss", "mse"])
    assert result.exit_code in (0, 2), f"exit {result.exit_code}:\n{result.output}\n{result.exception!r}"
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert "error:" in result.output and not out.exists()
        return
    c_files = list(out.glob("*.c"))
    cc = subprocess.run(["cc", "-std=c99", "-fsyntax-only", "-Werror=overflow", *map(str, c_files)], cwd=out,
                        capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr[-2000:]


SETTINGS = settings(max_examples=120, derandomize=True, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


@SETTINGS
@given(base=st.sampled_from(range(len(BASES))), kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=2),
       data=st.data())
def test_mutated_models(tmp_path_factory, base, kinds, data):
    model = onnx.ModelProto()
    model.CopyFrom(BASES[base])
    for kind in kinds:
        model = mutate(model, kind, lambda n: data.draw(st.integers(0, max(n - 1, 0))))
    tmp = tmp_path_factory.mktemp("fuzz")
    path = tmp / "m.onnx"
    path.write_bytes(model.SerializeToString())
    check_outcome(path, tmp)


@pytest.mark.parametrize("dim", [2**29, 2**31, 10**12])
def test_huge_dims_are_refused(tmp_path, dim):
    """Found by the fuzzer: such sizes overflowed the C ints of the generated calls."""
    model = onnx.ModelProto()
    model.CopyFrom(BASES[0])
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = dim
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    result = CliRunner().invoke(app, ["generate", str(path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "elements" in result.output, result.output


@settings(max_examples=30, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(base=st.sampled_from(range(len(BASES))), cut=st.floats(0.0, 0.99), junk=st.binary(max_size=64))
def test_truncated_and_random_bytes(tmp_path_factory, base, cut, junk):
    raw = BASES[base].SerializeToString()
    tmp = tmp_path_factory.mktemp("bytes")
    path = tmp / "m.onnx"
    path.write_bytes(raw[:int(len(raw) * cut)] + junk)
    check_outcome(path, tmp)
