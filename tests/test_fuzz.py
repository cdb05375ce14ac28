"""Fuzzing the compiler's input with the mutator of benchmarks/fuzz_models.py (which runs 1,000+
cases): valid models mutated into broken ones. Every case must end in a build whose C compiles, or
in one of our typed errors (exit code 2): never a traceback, never a C compile error; about one
in COMPARE_EVERY accepted cases also builds the host trainer, whose predict must equal
onnxruntime's forward (rtol = atol = 1e-4), and onnxruntime must run every model we accept. Deterministic (derandomized hypothesis,
bounded examples)."""
from __future__ import annotations

import zlib

import onnx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from typer.testing import CliRunner

from benchmarks.fuzz_models import BASES, BYTE_KINDS, KINDS, mutated, run
from codegen.cli import app

# A host build costs about a second: the cases whose bytes hash to 0 modulo this are compared
# with onnxruntime (chosen by content, so the same ones under any test order or xdist).
COMPARE_EVERY = 2


def check_outcome(raw: bytes, tmp_path) -> None:
    """Exit 0 with C that compiles (and onnxruntime's forward, for some), or exit 2 with one error
    message; nothing else."""
    path = tmp_path / "m.onnx"
    path.write_bytes(raw)
    outcome = run(path, tmp_path, compare=zlib.crc32(raw) % COMPARE_EVERY == 0)
    assert outcome.kind in ("accepted", "refused"), f"{outcome.kind}:\n{outcome.details}"
    assert not outcome.ort_refusal, f"we accept a model onnxruntime refuses: {outcome.ort_refusal}"


def _picks(data):
    return lambda n: data.draw(st.integers(0, max(n - 1, 0)))


def _settings(examples: int):
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


@_settings(150)
@given(base=st.sampled_from(range(len(BASES))), kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=2),
       data=st.data())
def test_mutated_models(tmp_path_factory, base, kinds, data):
    check_outcome(mutated(base, kinds, _picks(data)), tmp_path_factory.mktemp("fuzz"))


@_settings(30)
@given(base=st.sampled_from(range(len(BASES))), kinds=st.lists(st.sampled_from(BYTE_KINDS), min_size=1, max_size=3),
       data=st.data())
def test_corrupted_bytes(tmp_path_factory, base, kinds, data):
    """Flipped bytes, truncated files, junk appended: protobuf, onnx's checker and its shape
    inference raise all sorts of exceptions on these (UnicodeDecodeError, among others)."""
    check_outcome(mutated(base, kinds, _picks(data)), tmp_path_factory.mktemp("bytes"))


@pytest.mark.parametrize("index", range(len(BASES)))
def test_bases_match_onnxruntime(tmp_path, index):
    """The unmutated models compile, and the comparison with onnxruntime really runs."""
    path = tmp_path / "m.onnx"
    path.write_bytes(BASES[index].SerializeToString())
    outcome = run(path, tmp_path, compare=True)
    assert outcome.kind == "accepted" and outcome.compared, outcome


def _generate(tmp_path, model: onnx.ModelProto):
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return CliRunner().invoke(app, ["generate", str(path), "-o", str(tmp_path / "out")])


def _base(index: int = 0) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.CopyFrom(BASES[index])
    return model


@pytest.mark.parametrize("dim", [2**29, 2**31, 10**12])
def test_huge_dims_are_refused(tmp_path, dim):
    """Found by the fuzzer: such sizes overflowed the C ints of the generated calls."""
    model = _base()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = dim
    result = _generate(tmp_path, model)
    assert result.exit_code == 2 and "elements" in result.output, result.output
