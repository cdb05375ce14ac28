"""The command line as a user meets it: choices from the registries, plain help, shell completion,
progress that -q silences, held-out figures, device-trained weights saved by `run` and read by
`export`/`delta`, inspect's exit code and RAM totals, and single-string patterns in the API."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from onnx import helper
from typer.testing import CliRunner

import codegen
from codegen import blob, fit, ops
from codegen.cli import app
from codegen.manifest import read as read_manifest
from helpers import onnx_model

RNG = np.random.default_rng(0)
BATCH = 4
TERMINAL = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"}  # rich draws progress as on a terminal


def invoke(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def mlp(path, extra_nodes=(), out="y"):
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["y"]), *extra_nodes]
    return onnx_model(nodes, {"x": [BATCH, 8]}, {out: [BATCH, 3]},
                      {"W": RNG.normal(size=(3, 8)).astype(np.float32), "b": np.zeros(3, np.float32)}, path=path)


def clusters(n=64):
    """3 separable clusters in 8 dimensions, as train/build --data take them."""
    centers = RNG.normal(size=(3, 8)).astype(np.float32) * 3
    y = RNG.integers(0, 3, n)
    return (centers[y] + RNG.normal(size=(n, 8))).astype(np.float32), y


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A generated cross_entropy trainer, training and held-out data."""
    tmp = tmp_path_factory.mktemp("cli")
    mlp(tmp / "m.onnx")
    codegen.generate(tmp / "m.onnx", tmp / "build", loss="cross_entropy", lr=0.05)
    np.savez(tmp / "train.npz", **dict(zip("xy", clusters())))
    np.savez(tmp / "val.npz", **dict(zip("xy", clusters(32))))
    return tmp


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.split() == ["mcutrain", codegen.__version__]


@pytest.mark.parametrize("command", ["generate", "inspect"])
def test_choices_shown_and_refused(tmp_path, command):
    """--optimizer is a choice of the registry's kinds: listed in the help, others refused at
    parsing (exit 2, the choices named, nothing written)."""
    assert all(kind in invoke(command, "--help").output for kind in ops.OPTIMIZERS)
    args = [command, tmp_path / "m.onnx", "--optimizer", "rmsprop"]
    if command == "generate":
        args += ["-o", tmp_path / "o"]
    result = invoke(*args)
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and "'rmsprop' is not one of" in text and "'adamw'" in text, text
    assert not (tmp_path / "o").exists()


def test_loss_choices_come_from_the_registry():
    text = " ".join(invoke("generate", "--help").output.replace("│", " ").split())
    assert all(name in text for name in ops.LOSSES)
    assert set(fit.SCORES) == set(ops.LOSSES), "every loss needs its host evaluation (codegen/fit.py)"


def test_help_has_no_type_placeholders():
    commands = [None, *(c.name for c in app.registered_commands)]
    for command in commands:
        text = invoke(*([command] if command else []), "--help").output
        assert "<bool>" not in text and "<str>" not in text and "<float>" not in text, (command, text)
        assert "--help" in text


def test_target_completion_and_completion_install():
    env = {"_MCUTRAIN_COMPLETE": "complete_bash", "COMP_WORDS": "mcutrain run b --target cortex-m", "COMP_CWORD": "4"}
    result = CliRunner().invoke(app, [], env=env, prog_name="mcutrain")
    assert result.output.split() == ["cortex-m3", "cortex-m33f", "cortex-m4f", "cortex-m7f"]
    assert "--install-completion" in invoke("--help").output


def test_quiet_silences_progress(folder, tmp_path, monkeypatch):
    """The host compile shows a spinner (only when it really compiles), the epochs a bar, on
    stderr; -q leaves the results only."""
    for quiet, cache in ((False, "c1"), (True, "c2")):
        monkeypatch.setenv("MCUTRAIN_CACHE", str(tmp_path / cache))
        args = ["train", folder / "build", "--data", folder / "train.npz", "--save", tmp_path / f"{cache}.npz"]
        result = invoke(*(["-q"] if quiet else []), *args, env=TERMINAL)
        assert result.exit_code == 0, result.output
        assert ("compiling m.c for the host" in result.stderr) != quiet
        assert ("saved the trained parameters" in result.stdout) != quiet
        assert "epoch 1/1: training loss" in result.stdout


def test_held_out_figures_and_save_suffixes(folder, tmp_path):
    args = ["train", folder / "build", "--data", folder / "train.npz", "--val", folder / "val.npz", "--epochs", 2]
    for name in ("p.npz", "p.bin"):
        result = invoke(*args, "--save", tmp_path / name)
        assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[-2].startswith("epoch 2/2: training loss") and "training accuracy" in lines[-2]
    assert "; held-out loss" in lines[-2] and "held-out accuracy" in lines[-2]
    assert (tmp_path / "p.bin").read_bytes()[:4] == blob.PARAMS
    manifest = read_manifest(folder / "build")
    from_npz, from_blob = (blob.read_params(tmp_path / n, manifest) for n in ("p.npz", "p.bin"))
    for name in from_npz:
        np.testing.assert_array_equal(from_npz[name], from_blob[name])


@pytest.mark.parametrize("loss", sorted(ops.LOSSES))
def test_held_out_loss_is_the_c_loss(tmp_path, loss):
    """The loss evaluate() recomputes from predictions equals the C's loss of the same batch."""
    mlp(tmp_path / "m.onnx")
    codegen.generate(tmp_path / "m.onnx", tmp_path / "b", loss=loss)
    trainer = codegen.load_host(tmp_path / "b")
    x = RNG.normal(size=(BATCH, 8)).astype(np.float32)
    y = RNG.integers(0, 3, BATCH) if loss == "cross_entropy" else RNG.uniform(size=(BATCH, 3)).astype(np.float32)
    assert fit.evaluate(trainer, x, y).loss == pytest.approx(trainer.train_step(x, y), rel=1e-5)


def test_run_save_flows_into_export_and_delta(folder, tmp_path):
    """`run --save` writes the weights the firmware trained (host target: same harness, natively),
    in both formats; export and delta take them. A firmware built before the last generate is
    refused, not saved under the new model's name."""
    if not shutil.which("cc"):
        pytest.skip("no host C compiler (apt-get install gcc)")
    build = tmp_path / "build"
    shutil.copytree(folder / "build", build)
    assert invoke("build", build, "--target", "host", "--data", folder / "train.npz", "--epochs", 2).exit_code == 0
    plain = invoke("run", build, "--target", "host", "--save", tmp_path / "dev.npz")
    assert plain.exit_code == 0, plain.output
    assert "epoch 2: loss " in plain.stdout and "accuracy" in plain.stdout and "0x" not in plain.stdout
    verbose = invoke("run", build, "--target", "host", "-v", "--save", tmp_path / "dev.bin")
    assert verbose.exit_code == 0 and "param 0 0x" in verbose.stdout
    printed = codegen.firmware.parse_output(verbose.stdout).params
    manifest = read_manifest(build)
    for name in ("dev.npz", "dev.bin"):
        params = blob.read_params(tmp_path / name, manifest)
        np.testing.assert_array_equal(np.concatenate([p.ravel() for p in params.values()]), printed)
    done = invoke("export", build, "--params", tmp_path / "dev.bin", "-o", tmp_path / "trained.onnx")
    assert done.exit_code == 0 and (tmp_path / "trained.onnx").is_file(), done.output
    done = invoke("delta", build, "--params", tmp_path / "dev.npz", "--samples", 64, "-o", tmp_path / "d.bin")
    assert done.exit_code == 0, done.output
    change, samples = blob.decode_delta((tmp_path / "d.bin").read_bytes(), manifest)
    assert samples == 64 and any(np.abs(v).max() > 0 for v in change.values())

    codegen.generate(folder / "m.onnx", build, loss="cross_entropy", train="b")
    stale = invoke("run", build, "--target", "host", "--save", tmp_path / "stale.npz")
    assert stale.exit_code == 2 and "run `mcutrain build` again" in stale.output, stale.output
    assert not (tmp_path / "stale.npz").exists()


def test_inspect_json_exit_code(tmp_path):
    mlp(tmp_path / "m.onnx", [helper.make_node("Cos", ["y"], ["z"])], out="z")
    result = invoke("inspect", tmp_path / "m.onnx", "--json")
    assert result.exit_code == 2 and json.loads(result.stdout)["unsupported"] == ["Cos"]


def test_inspect_counts_the_round_start_copy_like_generate(tmp_path):
    mlp(tmp_path / "m.onnx")
    rows = {}
    for flag in ("--federated", "--no-federated"):
        result = invoke("inspect", tmp_path / "m.onnx", "--json", flag)
        assert result.exit_code == 0, result.output
        rows[flag] = json.loads(result.stdout)["memory_by_choice"]
    params = rows["--federated"][0]["param_bytes"]
    assert rows["--federated"][0]["round_start_bytes"] == params == 4 * (3 * 8 + 3)
    assert rows["--no-federated"][0]["round_start_bytes"] == 0
    summary = codegen.generate(tmp_path / "m.onnx", tmp_path / "b")
    assert summary["memory"]["round_start_bytes"] == rows["--federated"][0]["round_start_bytes"]
    assert "federated" in invoke("inspect", tmp_path / "m.onnx").stdout  # a column of the table
    assert "federated" not in invoke("inspect", tmp_path / "m.onnx", "--no-federated").stdout


def test_a_single_pattern_may_be_a_string(tmp_path):
    mlp(tmp_path / "m.onnx")
    summary = codegen.generate(tmp_path / "m.onnx", tmp_path / "b", train="W")
    assert [p["name"] for p in summary["params"]] == ["W"] and summary["frozen"] == ["b"]
    summary = codegen.generate(tmp_path / "m.onnx", tmp_path / "c", freeze="W")
    assert [p["name"] for p in summary["params"]] == ["b"]
    mine = next(row for row in codegen.inspect(tmp_path / "m.onnx", train="W").memory_by_choice
                if row.choice == "your choice")
    assert mine.options == "--train W" and mine.memory["param_bytes"] == 4 * 3 * 8


def test_inspect_json_schema_and_plain_names(tmp_path):
    """`inspect --json` is Report.to_json() with its schema version; node names with rich markup
    or control characters are printed as text in the table."""
    from codegen.inspection import SCHEMA

    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1, name="[bold red]fc\x1b[2J")]
    onnx_model(nodes, {"x": [2, 3]}, {"y": [2, 4]}, {"W": np.ones((4, 3), np.float32), "b": np.zeros(4, np.float32)},
               path=tmp_path / "m.onnx")
    as_json = json.loads(CliRunner().invoke(app, ["inspect", str(tmp_path / "m.onnx"), "--json"]).stdout)
    assert as_json["schema"] == SCHEMA and as_json == codegen.inspect(tmp_path / "m.onnx").to_json()
    text = CliRunner().invoke(app, ["inspect", str(tmp_path / "m.onnx")]).stdout
    assert "[bold red]fc\\x1b[2J" in text and "\x1b" not in text


def shape_chain_model(path, extra_ops=()):
    """x -> Reshape(x, Concat(Gather(Shape(x), 0), [-1])) -> Gemm: the shape chain folds away;
    extra_ops appends unsupported elementwise ops (Cos, Sin, ...) after the Gemm."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "zero"], ["n"]),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["flat"]),
             helper.make_node("Gemm", ["flat", "W", "b"], ["y0"], transB=1)]
    last = "y0"
    for k, op in enumerate(extra_ops):
        nodes.append(helper.make_node(op, [last], [f"e{k}"], name=f"extra{k}"))
        last = f"e{k}"
    nodes[-1].output[0] = "y"
    onnx_model(nodes, {"x": [2, 3, 2]}, {"y": [2, 4]},
               {"W": np.ones((4, 6), np.float32), "b": np.zeros(4, np.float32), "zero": np.array(0),
                "axes": np.array([0]), "minus1": np.array([-1])}, path=path)


def test_inspect_judges_ops_after_folding(tmp_path):
    """Shape/Gather/Concat that only compute a shape are folded before ops are judged, as in generate."""
    shape_chain_model(tmp_path / "m.onnx")
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "m.onnx"), "--json"])
    assert result.exit_code == 0, result.output
    assert [n["op"] for n in json.loads(result.stdout)["nodes"]] == ["Reshape", "Gemm"]
    codegen.generate(tmp_path / "m.onnx", tmp_path / "b", loss="mse")


def test_generate_lists_every_unsupported_op(tmp_path):
    shape_chain_model(tmp_path / "m.onnx", ["Cos", "Sin", "Cos"])
    result = CliRunner().invoke(app, ["generate", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "b")])
    assert result.exit_code == 2 and "3 nodes use unsupported ops: Cos, Sin" in result.output, result.output
    assert all(f"extra{k}" in result.output for k in range(3))
