"""Hostile names cannot inject C: every kind of name a model file or the command line carries
(node, tensor, initializer, graph, input/output, model path, --name) reaches the generated code
only as escaped comment or string text, or is refused cleanly. Each accepted model still computes
what onnxruntime computes, and no file appears outside the output folder."""
from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import codegen
from codegen import ctext
from codegen.cli import app

INJECTED = "pwned"  # every payload tries to make this word (or a call of system) C code
# As a C token of its own: sanitised identifiers (a_pwned_arena) may contain the letters.
INJECTED_TOKEN = re.compile(r"\b(pwned|system)\b")
PAYLOADS = {
    "comment-close": 'x */ { extern int system(const char *); system("touch pwned"); } /* ',
    "line-comment": "a // b \n pwned(); /* \r\n */",
    "trigraph-splice": "*??/\n/ pwned(); /*",
    "backslash-splice": "*\\\n/ pwned(); /*",
    "quotes": "\"pwned\" 'p' \\\" \\",
    "directives": "\n#define pwned 1\n#include <stdlib.h>\n%: pwned",
    "nul-and-unicode": "n\x00pwned\u00e9\u540d\u2713\U0001F600",
    "keywords": "int return while main static pwned",
    "digraphs-and-ctrl": "<% pwned %> <: :> \t\v\f\x1b??=??(??)??'",
}


def hostile_model(p: str) -> onnx.ModelProto:
    """A two-layer MLP whose every name carries payload p (made unique per name)."""
    rng = np.random.default_rng(0)
    n = {k: f"{p}{k}" for k in ("x", "W1", "b1", "h", "r", "W2", "b2", "y", "fc1", "relu", "fc2", "graph")}
    nodes = [helper.make_node("Gemm", [n["x"], n["W1"], n["b1"]], [n["h"]], transB=1, name=n["fc1"]),
             helper.make_node("Relu", [n["h"]], [n["r"]], name=n["relu"], doc_string=p),
             helper.make_node("Gemm", [n["r"], n["W2"], n["b2"]], [n["y"]], transB=1, name=n["fc2"])]
    inits = {n["W1"]: rng.normal(size=(5, 4)), n["b1"]: rng.normal(size=5),
             n["W2"]: rng.normal(size=(3, 5)), n["b2"]: rng.normal(size=3)}
    graph = helper.make_graph(nodes, n["graph"], [helper.make_tensor_value_info(n["x"], TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info(n["y"], TensorProto.FLOAT, [2, 3])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], doc_string=p)


def c_code_only(text: str) -> str:
    """What the C compiler sees as code: translation phases 1-3 (trigraphs, line splices, then
    comments and string/character literals removed)."""
    trigraphs = dict(zip("=(/)'<!>-", "#[\\]^{|}~"))
    text = re.sub(r"\?\?([=(/)'<!>-])", lambda m: trigraphs[m.group(1)], text)
    text = text.replace("\\\n", "")
    token = re.compile(r'/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)
    return token.sub(" ", text)


def files_outside(root, out):
    return sorted(p for p in root.rglob("*") if out not in p.parents and p != out)


@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_hostile_names(tmp_path, monkeypatch, payload):
    monkeypatch.chdir(tmp_path)
    model = hostile_model(payload)
    path = tmp_path / (re.sub(r"[/\x00]", "_", payload)[:60] + ".onnx")  # the model path is hostile too
    path.write_bytes(model.SerializeToString())
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["mcutrain", "generate", str(path), "-o", str(out), payload])
    before = files_outside(tmp_path, out)
    codegen.generate(path, out, loss="mse")
    for src in [*out.glob("*.c"), *out.glob("*.h")]:
        code = c_code_only(src.read_text())
        assert not INJECTED_TOKEN.search(code), f"{src.name}: payload outside comments/strings"
    x = np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32)
    ours = codegen.load_host(out).predict(x)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {model.graph.input[0].name: x})[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    assert files_outside(tmp_path, out) == before and not (tmp_path / INJECTED).exists()


@pytest.mark.parametrize("name", ["x */ pwned /*", "a-b", "9lives", "mt", "in", "a" * 65, "int\n"])
def test_hostile_prefix_is_refused(tmp_path, name):
    model = tmp_path / "m.onnx"
    model.write_bytes(hostile_model("").SerializeToString())
    result = CliRunner().invoke(app, ["generate", str(model), "-o", str(tmp_path / "out"), "--name", name])
    assert result.exit_code == 2 and "error:" in result.output, result.output
    assert not (tmp_path / "out").exists()


def two_input_model(a: str, b: str) -> onnx.ModelProto:
    nodes = [helper.make_node("Add", [a, b], ["s"]),
             helper.make_node("Gemm", ["s", "W", "bias"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3]) for n in (a, b)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                              [numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "W"),
                               numpy_helper.from_array(np.ones(2, np.float32), "bias")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("a, b", [("a.b", "a_b"), ("a", "A"), ("x", "x_all"), ("arena", "labels")])
def test_colliding_names_get_unique_identifiers(tmp_path, a, b):
    """Sanitised names that would collide (also as upper-case macros) get distinct identifiers."""
    path = tmp_path / "m.onnx"
    path.write_bytes(two_input_model(a, b).SerializeToString())
    codegen.generate(path, tmp_path / "out", loss="mse")
    header = (tmp_path / "out" / "m.h").read_text()
    defines = re.findall(r"#define (M_INPUT_\w+_SIZE)", header)
    assert len(defines) == len(set(defines)) == 2, defines
    xa, xb = np.array([[1, 2, 3]], np.float32), np.array([[10, 20, 30]], np.float32)
    y = codegen.load_host(tmp_path / "out").predict([xa, xb])
    np.testing.assert_allclose(y, (xa + xb) @ np.arange(6).reshape(2, 3).T + 1)


def test_escapes_are_inert():
    """The escaping functions themselves: no comment/string terminator, splice or trigraph survives."""
    for p in PAYLOADS.values():
        for text in (ctext.comment(p), ctext.string(p)[1:-1]):
            assert not any(s in text for s in ("*/", "/*", "//", "??", "\\\n", "\n", "\x00"))
        assert '"' not in ctext.string(p)[1:-1] and "\\" not in ctext.comment(p)


def test_unescaped_text_is_refused():
    """A template that prints a raw name instead of escaping it fails instead of writing C."""
    with pytest.raises(codegen.McutrainError, match="unescaped"):
        ctext.ENV.from_string("/* {{ name }} */").render(name=PAYLOADS["comment-close"])


def test_error_messages_show_names_as_text(tmp_path):
    """A name in an error message cannot style or drive the terminal (rich markup, escapes)."""
    result = CliRunner().invoke(app, ["generate", str(tmp_path / "[bold]x\x1b[2J.onnx"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "[bold]x\\x1b[2J" in result.output and "\x1b" not in result.output


# --- no half-written or mixed build folders ----------------------------------------------------

def mlp_file(tmp_path, hidden: int):
    rng = np.random.default_rng(hidden)
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "b2"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in {
                                  "W1": rng.normal(size=(hidden, 4)), "b1": rng.normal(size=hidden),
                                  "W2": rng.normal(size=(2, hidden)), "b2": rng.normal(size=2)}.items()])
    path = tmp_path / f"mlp{hidden}.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())
    return path


KILLER = """
import os, signal, sys
import codegen, codegen.files as files
events, kill_at = [0], int(sys.argv[3])
def counted(fn):
    def wrapper(*args):
        if events[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        events[0] += 1
        return fn(*args)
    return wrapper
files._stage = counted(files._stage)   # before writing a file's bytes
os.replace = counted(os.replace)       # before moving a written file into place
codegen.generate(sys.argv[1], sys.argv[2], loss="mse", name="net")
print("events", events[0])
"""


def test_killed_generate_never_leaves_a_usable_mixed_folder(tmp_path):
    """SIGKILL before each file write of a second generate over a first: the folder then loads
    as the old or the new model, or is refused; it is never built from a mix of the two."""
    old, new = mlp_file(tmp_path, 3), mlp_file(tmp_path, 5)
    x = np.ones((1, 4), np.float32)
    expected = []
    for model in (old, new):
        codegen.generate(model, tmp_path / "ref", loss="mse", name="net")
        expected.append(codegen.load_host(tmp_path / "ref").predict(x))
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    run = subprocess.run([sys.executable, script, new, tmp_path / "probe", "-1"], capture_output=True, text=True)
    total = int(run.stdout.split()[-1])
    outcomes = set()
    for kill_at in sorted({0, 1, total // 2 - 1, total // 2, total // 2 + 1, total - 2, total - 1}):
        out = tmp_path / f"k{kill_at}"
        codegen.generate(old, out, loss="mse", name="net")
        run = subprocess.run([sys.executable, script, new, out, str(kill_at)], capture_output=True, text=True)
        assert run.returncode == -signal.SIGKILL, run.stderr
        try:
            y = codegen.load_host(out).predict(x)
        except codegen.McutrainError as e:
            assert "run `mcutrain generate` again" in str(e)
            outcomes.add("refused")
            continue
        outcomes.add("old" if np.array_equal(y, expected[0]) else "new")
        assert np.array_equal(y, expected[0]) or np.array_equal(y, expected[1])
    assert outcomes >= {"old", "refused"}, outcomes


def test_full_disk_leaves_earlier_output_intact(tmp_path, monkeypatch):
    """ENOSPC while writing: exit 2 with a clear message, the earlier folder byte for byte as it
    was, no temporary files left behind."""
    out = tmp_path / "out"
    codegen.generate(mlp_file(tmp_path, 3), out, loss="mse", name="net")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    real_write, calls = os.write, [0]

    def full_disk(fd, data):
        calls[0] += 1
        if calls[0] > 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    result = CliRunner().invoke(app, ["generate", str(mlp_file(tmp_path, 5)), "-o", str(out), "--name", "net"])
    monkeypatch.undo()
    assert result.exit_code == 2 and "No space left on device" in result.output, result.output
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    fresh = tmp_path / "fresh"  # a folder that did not exist before is not left behind either
    monkeypatch.setattr(os, "write", full_disk)
    calls[0] = 0
    result = CliRunner().invoke(app, ["generate", str(mlp_file(tmp_path, 5)), "-o", str(fresh / "sub")])
    monkeypatch.undo()
    assert result.exit_code == 2 and not fresh.exists()


def test_edited_folder_is_refused_everywhere(tmp_path):
    """load_host, `build`, `export` and `train` verify the manifest's hashes before using a folder."""
    out = tmp_path / "out"
    codegen.generate(mlp_file(tmp_path, 3), out, loss="mse", name="net")
    (tmp_path / "p.npz").write_bytes(b"")
    with (out / "net.c").open("a") as f:
        f.write("\n/* edited */\n")
    with pytest.raises(codegen.McutrainError, match="does not match"):
        codegen.load_host(out)
    data = tmp_path / "d.npz"
    np.savez(data, x=np.ones((4, 4), np.float32), y=np.ones((4, 2), np.float32))
    for args in (["build", str(out), "--target", "host", "--data", str(data)],
                 ["export", str(out), "--params", str(tmp_path / "p.npz"), "-o", str(tmp_path / "e.onnx")],
                 ["train", str(out), "--data", str(data)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and "does not match" in result.output, (args, result.output)
    (out / "mcutrain.json").write_text((out / "mcutrain.json").read_text().replace('"mse"', '"bce"'))
    result = CliRunner().invoke(app, ["train", str(out), "--data", str(data)])
    assert result.exit_code == 2 and "corrupt" in result.output, result.output


def test_output_files_have_normal_permissions(tmp_path):
    out = tmp_path / "out"
    codegen.generate(mlp_file(tmp_path, 3), out, loss="mse")
    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()} == {0o666 & ~umask}
