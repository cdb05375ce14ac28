"""Corrupted ONNX Runtime training artifacts through `mcutrain import-ort`: every case compiles or
is refused with one message naming the file and what to do, never a traceback. The artifacts are
tests/data/ort_artifacts (written once by its make.py: no onnxruntime-training needed here); the
mutator is benchmarks/fuzz_ort.py, whose first cases cover every kind of mutation (the long run:
python -m benchmarks.fuzz_ort --cases 1000)."""
from __future__ import annotations

import onnx
import pytest

from benchmarks import fuzz_ort

CASES = fuzz_ort.cases(seed=0)[:150]
CHECKPOINT = (fuzz_ort.ARTIFACTS / "checkpoint").read_bytes()
TRAINING = (fuzz_ort.ARTIFACTS / "training_model.onnx").read_bytes()
OPTIMIZER = (fuzz_ort.ARTIFACTS / "optimizer_model.onnx").read_bytes()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.file}: {c.what}" for c in CASES])
def test_corrupt_artifacts(case, tmp_path):
    outcome, details = fuzz_ort.run(case, tmp_path)
    assert outcome in ("accepted", "refused"), details
    if outcome == "refused" and case.file == "checkpoint":
        assert str(tmp_path / "artifacts" / "checkpoint") in details, details


def test_intact_artifacts_compile(tmp_path):
    """Else every case above would be a refusal, and the fuzzing would prove nothing."""
    outcome, details = fuzz_ort.run(fuzz_ort.Case("checkpoint", "intact", CHECKPOINT), tmp_path)
    assert outcome == "accepted", details


def _pick(mutations: list[tuple[str, bytes]], what: str) -> bytes:
    return next(data for description, data in mutations if description.endswith(what))


def _input_width(n: int) -> bytes:
    """The training model with input x declared [2, n] (the checkpoint's first layer takes 4)."""
    model = onnx.load_from_string(TRAINING)
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = n
    return model.SerializeToString()


@pytest.mark.parametrize("file, data, message", [
    ("checkpoint", CHECKPOINT[:200],
     "is corrupt: a table's vtable offset (4 bytes at byte 284) lies outside the file (200 bytes)"),
    ("checkpoint", _pick(fuzz_ort.words(CHECKPOINT), "-> 0xffffffff"), "lies outside the file"),
    ("checkpoint", _pick(fuzz_ort.int64s(CHECKPOINT), "-> -1"), "has dims [-1"),
    ("checkpoint", CHECKPOINT.replace(b"2.weight", b"\xff\xfeweight"), "is not UTF-8"),
    ("checkpoint", CHECKPOINT.replace(b"2.bias", b"0.bias"), "0.bias appear more than once"),
    ("checkpoint", CHECKPOINT.replace(b"2.weight", b"2.weighX"),
     "tensor '2.weighX' is [2, 3] in the checkpoint, the training model has no such input"),
    ("checkpoint", _pick(fuzz_ort.halfwords(CHECKPOINT), "at 32: 8 -> 0x0"),
     "it lacks 0.bias, 0.weight, 2.weight, which the training model trains"),
    ("training_model.onnx", TRAINING.replace(b"\x1a\x07/0/Gemm", b"\x1a\x07/0/Ge\xffm"),  # a node's name
     "training_model.onnx' holds a name that is not valid UTF-8"),
    ("training_model.onnx", _input_width(5), "fails shape inference"),
    ("training_model.onnx", _pick(fuzz_ort.graph_edits(TRAINING), "no outputs"), "it has no outputs"),
    ("training_model.onnx", _pick(fuzz_ort.graph_edits(TRAINING), "node 3 input 0 is 'x'"),  # Sub(x, target)
     "its loss (Sub, Pow, ReduceMean) reads no output of the model"),
    ("optimizer_model.onnx", _pick(fuzz_ort.graph_edits(OPTIMIZER), "attribute alpha = 'sum'"),
     "AdamWOptimizer attribute 'alpha' is b'sum', not a finite float"),
], ids=["truncated", "offset", "dims", "utf8", "duplicate", "renamed", "no-trainable", "onnx-utf8", "onnx-shapes",
        "no-outputs", "loss-reads-input", "adamw-attribute"])
def test_corrupt_artifact_messages(tmp_path, file, data, message):
    outcome, details = fuzz_ort.run(fuzz_ort.Case(file, message, data), tmp_path)
    assert outcome == "refused" and message in details and ("re-create" in details or "again" in details), details
