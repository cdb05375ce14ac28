"""Corrupted ONNX Runtime training artifacts through `mcutrain import-ort`: every case must be
refused with one error message (exit 2) or compile (exit 0), never a traceback. The mutator and
the runner are shared with tests/test_ort_fuzz.py, which runs the first cases in CI.
Usage: python -m benchmarks.fuzz_ort [--cases 1000] [--seed 0]"""
from __future__ import annotations

import argparse
import itertools
import re
import struct
import sys
import tempfile
import traceback
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import helper
from typer.testing import CliRunner

from codegen.cli import app
from codegen.ort_import import FILES

ARTIFACTS = Path(__file__).resolve().parent.parent / "tests" / "data" / "ort_artifacts"
MODELS = [f for f in FILES if f.endswith(".onnx")]
EDIT_OPS = ("Sub", "Pow", "ReduceMean", "SoftmaxCrossEntropyLoss", "Identity", "SGDOptimizerV2", "AdamWOptimizer")
EDIT_VALUES = ("sum", "none", -1, 2.5, [1, 2])


@dataclass(frozen=True)
class Case:
    file: str  # the corrupted artifact
    what: str  # the mutation, for reports
    data: bytes


def _put(buf: bytes, at: int, raw: bytes) -> bytes:
    return buf[:at] + raw + buf[at + len(raw):]


def truncations(buf: bytes) -> list[tuple[str, bytes]]:
    return [(f"truncated to {n} bytes", buf[:n]) for n in range(len(buf))]


def flips(buf: bytes, rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """One byte xor-ed with a random non-zero mask, at as many seeded positions as the file has bytes."""
    picks = zip(rng.integers(0, len(buf), len(buf)), rng.integers(1, 256, len(buf)))
    return [(f"byte {at} ^= {mask:#04x}", _put(buf, int(at), bytes([buf[at] ^ mask]))) for at, mask in picks]


def words(buf: bytes) -> list[tuple[str, bytes]]:
    """Aligned 4-byte words that look like an offset or a length (below the file size, or a
    negative vtable distance) set to values a reader must not trust."""
    n = len(buf)
    return [(f"word at {at}: {v} -> {new:#x}", _put(buf, at, struct.pack("<I", new)))
            for at in range(0, n - 3, 4) if 0 < abs(v := struct.unpack_from("<i", buf, at)[0]) < n
            for new in (0, 0xFFFFFFFF, 0x7FFFFFFF, n - 4, n - 1, n, n + 4)]


def halfwords(buf: bytes) -> list[tuple[str, bytes]]:
    """Small 16-bit values (vtable sizes and field offsets) set to zero, odd, or past any table."""
    return [(f"halfword at {at}: {v} -> {new:#x}", _put(buf, at, struct.pack("<H", new)))
            for at in range(0, len(buf) - 1, 2) if 0 < (v := struct.unpack_from("<H", buf, at)[0]) <= 64
            for new in (0, 1, 2, 0x7FFF, 0xFFFF)]


def int64s(buf: bytes) -> list[tuple[str, bytes]]:
    """Small 8-byte values (tensor dims) set to zero, negative, off by one or huge."""
    return [(f"int64 at {at}: {v} -> {new}", _put(buf, at, struct.pack("<q", new)))
            for at in range(0, len(buf) - 7, 4) if 0 < (v := struct.unpack_from("<q", buf, at)[0]) <= 4096
            for new in (0, -1, v + 1, 2**31, 2**62, -2**63)]


def strings(buf: bytes) -> list[tuple[str, bytes]]:
    """Length-prefixed names: invalid UTF-8, a name the training model lacks, another tensor's
    name (a duplicate)."""
    found = [(m.start(), m.group()) for m in re.finditer(rb"[\x20-\x7e]{2,}", buf)
             if m.start() >= 4 and struct.unpack_from("<I", buf, m.start() - 4)[0] == len(m.group())]
    return [(f"name {name!r} -> {new!r}", _put(buf, at, new)) for at, name in found
            for new in (b"\xff\xfe" + name[2:], name[:-1] + b"#",
                        *(other for _, other in found if len(other) == len(name) and other != name))]


def _no_outputs(g: onnx.GraphProto) -> None:
    g.ClearField("output")


def _rename_output(g: onnx.GraphProto, name: str) -> None:
    g.output[0].name = name


def _drop_node(g: onnx.GraphProto, k: int) -> None:
    del g.node[k]


def _rewire(g: onnx.GraphProto, k: int, slot: int, name: str) -> None:
    g.node[k].input[slot] = name


def _retype(g: onnx.GraphProto, k: int, op: str) -> None:
    g.node[k].op_type = op


def _set_attribute(g: onnx.GraphProto, k: int, name: str, value) -> None:
    kept = [a for a in g.node[k].attribute if a.name != name]
    g.node[k].ClearField("attribute")
    g.node[k].attribute.extend([*kept, helper.make_attribute(name, value)])


def _edits(g: onnx.GraphProto) -> list[tuple[str, Callable[[onnx.GraphProto], None]]]:
    inputs = [i.name for i in g.input]
    edits = [("no outputs", _no_outputs)]
    edits += [(f"output 0 is {name!r}", partial(_rename_output, name=name))
              for name in inputs + [o for n in g.node for o in n.output]]
    for k, node in enumerate(g.node):
        edits.append((f"node {k} dropped", partial(_drop_node, k=k)))
        edits += [(f"node {k} input {slot} is {name!r}", partial(_rewire, k=k, slot=slot, name=name))
                  for slot in range(len(node.input)) for name in inputs]
        edits += [(f"node {k} is {op}", partial(_retype, k=k, op=op)) for op in EDIT_OPS]
        edits += [(f"node {k} attribute {a} = {v!r}", partial(_set_attribute, k=k, name=a, value=v))
                  for a in sorted({x.name for x in node.attribute} | {"alpha", "reduction"}) for v in EDIT_VALUES]
    return edits


def graph_edits(buf: bytes) -> list[tuple[str, bytes]]:
    """Valid protobuf, wrong content: what ort_import reads from a training or optimizer model
    (its outputs, the wiring of graph inputs, op types, attributes) changed."""
    model = onnx.load_from_string(buf)
    out = []
    for what, edit in _edits(model.graph):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        edit(copy.graph)
        out.append((what, copy.SerializeToString()))
    return out


def _checkpoint_streams(buf: bytes, rng: np.random.Generator) -> list[list[Case]]:
    kinds = [truncations(buf), flips(buf, rng), words(buf), halfwords(buf), int64s(buf), strings(buf)]
    return [[Case("checkpoint", what, data) for what, data in kind] for kind in kinds]


def _model_streams(originals: dict[str, bytes], rng: np.random.Generator) -> list[list[Case]]:
    damaged = [Case(f, what, data) for f in MODELS
               for what, data in truncations(originals[f]) + flips(originals[f], rng)]
    return [damaged, [Case(f, what, data) for f in MODELS for what, data in graph_edits(originals[f])]]


def cases(seed: int = 0) -> list[Case]:
    """Every mutation, deterministic: one stream per kind (checkpoint truncations, flips, words,
    halfwords, dims, names; ONNX files' bytes, their graphs), each shuffled, taken in turn so that
    any prefix covers all kinds."""
    rng = np.random.default_rng(seed)
    originals = {f: (ARTIFACTS / f).read_bytes() for f in FILES}
    streams = [*_checkpoint_streams(originals["checkpoint"], rng), *_model_streams(originals, rng)]
    for stream in streams:
        rng.shuffle(stream)
    return [c for turn in itertools.zip_longest(*streams) for c in turn if c is not None]


def run(case: Case, folder: Path) -> tuple[str, str]:
    """('accepted' | 'refused' | 'traceback', details) of `mcutrain import-ort` on the artifacts
    with `case` applied; a refusal must be exit 2 with an 'error:' line and no output folder."""
    artifacts, out = folder / "artifacts", folder / "out"
    artifacts.mkdir()
    for f in FILES:
        (artifacts / f).write_bytes(case.data if f == case.file else (ARTIFACTS / f).read_bytes())
    result = CliRunner().invoke(app, ["import-ort", str(artifacts), "-o", str(out)])
    if result.exit_code == 0:
        return "accepted", result.output
    if result.exit_code == 2 and isinstance(result.exception, SystemExit) and "error:" in result.output \
            and not out.exists():
        return "refused", result.output
    details = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else ""
    return "traceback", f"exit {result.exit_code}\n{result.output}\n{details}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts, kinds = Counter(), Counter()
    for i, case in enumerate(cases(args.seed)[:args.cases]):
        with tempfile.TemporaryDirectory() as tmp:
            outcome, details = run(case, Path(tmp))
        counts[outcome] += 1
        if outcome == "traceback":
            kinds[details.strip().splitlines()[-1].split(":")[0]] += 1
            print(f"case {i}: {case.file}: {case.what}\n{details}", file=sys.stderr)
    print(f"cases {sum(counts.values())}, accepted {counts['accepted']}, refused {counts['refused']}, "
          f"tracebacks {counts['traceback']}")
    for kind, n in kinds.most_common():
        print(f"  {n} x {kind}")
    sys.exit(1 if counts["traceback"] else 0)


if __name__ == "__main__":
    main()
