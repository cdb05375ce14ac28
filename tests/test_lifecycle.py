"""The on-device training lifecycle: ONNX export of trained weights, the parameter blob (device
persistence/transport, refused whole when any field is wrong), federated deltas and FedAvg, and
the federated example end to end."""
from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx.reference import ReferenceEvaluator
from typer.testing import CliRunner

import codegen
from codegen import blob, federated
from codegen.cli import app
from codegen.errors import DataError
from helpers import export_torch

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits"
BATCH = 16


def digits_batches(steps: int, seed: int = 0):
    data = np.load(DIGITS / "digits.npz")
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.choice(len(data["x"]), BATCH, replace=False)
        yield data["x"][idx], data["y"][idx]


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    out = tmp_path_factory.mktemp("lifecycle") / "digits"
    codegen.generate(DIGITS / "mlp.onnx", out, loss="cross_entropy", lr=0.05, momentum=0.9, batch=BATCH)
    return out


def build_manifest(build):
    return codegen.manifest.read(build)


def trained(build, steps: int = 20, seed: int = 0) -> codegen.HostTrainer:
    t = codegen.load_host(build)
    for x, y in digits_batches(steps, seed):
        t.train_step(x, y)
    return t


def probe():
    return np.random.default_rng(7).uniform(size=(BATCH, 64)).astype(np.float32)


# --- export ---------------------------------------------------------------------------------------

def cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 10))


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
def test_export_round_trip(tmp_path, dynamo):
    """Trained in C, exported: onnxruntime and onnx.reference compute what the C predict does."""
    path = export_torch(cnn(), torch.zeros(4, 1, 8, 8), tmp_path / "cnn.onnx", dynamo=dynamo)
    codegen.generate(path, tmp_path / "b", loss="cross_entropy", lr=0.1)
    path.unlink()  # the build folder alone is enough to export
    t = codegen.load_host(tmp_path / "b")
    rng = np.random.default_rng(0)
    for _ in range(10):
        t.train_step(rng.normal(size=(4, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 4))
    t.export_onnx(tmp_path / "trained.onnx")
    model = onnx.load(str(tmp_path / "trained.onnx"))
    onnx.checker.check_model(model)
    x = rng.normal(size=(4, 1, 8, 8)).astype(np.float32)
    ours = t.predict(x)
    session = ort.InferenceSession(str(tmp_path / "trained.onnx"), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    np.testing.assert_allclose(session.run(None, feed)[0], ours, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ReferenceEvaluator(model).run(None, feed)[0], ours, rtol=1e-5, atol=1e-5)
    before = ort.InferenceSession(str(tmp_path / "b" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert not np.allclose(before.run(None, feed)[0], ours, atol=1e-3), "export must carry the trained weights"


@pytest.mark.parametrize("fmt", ["blob", "npz"])
def test_export_cli(build, tmp_path, fmt):
    t = trained(build)
    params = tmp_path / f"params.{'bin' if fmt == 'blob' else 'npz'}"
    if fmt == "blob":
        params.write_bytes(t.save_params())
    else:
        np.savez(params, **t.get_params())
    result = CliRunner().invoke(app, ["export", str(build), "--params", str(params), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": probe()})[0], t.predict(probe()), rtol=1e-5, atol=1e-5)


def test_export_cli_refuses_other_files(build, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, nope=np.zeros(3))
    result = CliRunner().invoke(app, ["export", str(build), "--params", str(bad), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "this model trains" in result.output
    assert not (tmp_path / "m.onnx").exists()


# --- parameter blob -------------------------------------------------------------------------------

def test_blob_layout_and_round_trip(build):
    a, b = trained(build), codegen.load_host(build)
    data = a.save_params()
    magic, version, tensors, hash_, length, crc = blob.HEADER.unpack_from(data)
    assert (magic, version, tensors, hash_) == (b"MTPB", blob.VERSION, 4, a.manifest.model_hash)
    assert length == 4 * sum(v.size for v in a.get_params().values()) == len(data) - 20
    assert crc == zlib.crc32(data[20:])
    flat = np.concatenate([v.ravel() for v in a.get_params().values()])
    assert data[20:] == flat.astype("<f4").tobytes()  # tensors in manifest order, little-endian
    assert data == blob.encode_params(a.get_params(), a.manifest)  # Python writes the same bytes
    b.load_params(data)
    np.testing.assert_array_equal(b.predict(probe()), a.predict(probe()))
    assert f"#define MLP_MODEL_HASH 0x{a.manifest.model_hash:08X}u" in (build / "mlp.h").read_text()


def _field(offset: int, fmt: str, delta: int):
    def corrupt(data: bytes) -> bytes:
        (v,) = struct.unpack_from(fmt, data, offset)
        return data[:offset] + struct.pack(fmt, (v + delta) % (1 << (8 * struct.calcsize(fmt)))) + \
            data[offset + struct.calcsize(fmt):]
    return corrupt


def _flip(data: bytes) -> bytes:
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1:]


CORRUPTIONS = {  # name: (how, C return code, words of the Python message)
    "magic": (lambda d: b"XTPB" + d[4:], -2, "magic"),
    "version": (_field(4, "<H", 1), -3, "version"),
    "tensors": (_field(6, "<H", 1), -5, "tensors"),
    "hash": (_field(8, "<I", 1), -4, "model hash"),
    "length": (_field(12, "<I", 4), -6, "length"),
    "crc": (_field(16, "<I", 1), -7, "CRC"),
    "payload": (_flip, -7, "CRC"),
    "truncated": (lambda d: d[:-1], -1, "truncated"),
    "trailing": (lambda d: d + b"\0", -1, "trailing"),
    "header_only": (lambda d: d[:12], -1, "header"),
    "empty": (lambda d: b"", -1, "header"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
@pytest.mark.parametrize("fn", ["load_params", "apply_global"])
def test_corrupt_blob_refused(build, case, fn):
    how, code, words = CORRUPTIONS[case]
    source, t = trained(build, seed=1), trained(build, seed=2)
    bad = how(source.save_params())
    params, out = t.get_params(), t.predict(probe())
    c_fn = "load_params" if fn == "load_params" else "fl_apply_global"
    assert t._fn(c_fn)(t._ffi.from_buffer("uint8_t[]", bad), len(bad)) == code
    with pytest.raises(DataError, match=words):
        getattr(t, fn)(bad)
    with pytest.raises(DataError, match=words):
        blob.decode_params(bad, t.manifest)
    for name, value in t.get_params().items():
        np.testing.assert_array_equal(value, params[name])
    np.testing.assert_array_equal(t.predict(probe()), out)


def test_hash_tracks_trainable_set_not_batch(tmp_path, build):
    codegen.generate(DIGITS / "mlp.onnx", tmp_path / "b1", loss="cross_entropy", batch=1)
    codegen.generate(DIGITS / "mlp.onnx", tmp_path / "fc2", loss="cross_entropy", batch=BATCH, train=["fc2.*"])
    full, one, head = (codegen.load_host(p) for p in (build, tmp_path / "b1", tmp_path / "fc2"))
    one.load_params(trained(build).save_params())  # batch size does not matter to the weights
    with pytest.raises(DataError, match="model hash"):
        head.load_params(full.save_params())


def test_small_buffers_refused(build):
    t = codegen.load_host(build)
    buf = t._ffi.new("uint8_t[]", 100)
    assert t._fn("save_params")(buf, 100) == -1
    assert t._fn("fl_delta")(buf, 100, 1, 0) == -1


# --- federated ------------------------------------------------------------------------------------

def test_delta_float_and_int8(build):
    t = codegen.load_host(build)
    start = t.get_params()
    for x, y in digits_batches(15):
        t.train_step(x, y)
    expected = {n: v - start[n] for n, v in t.get_params().items()}
    d, samples = blob.decode_delta(t.delta(240), t.manifest)
    assert samples == 240
    for n, v in expected.items():
        np.testing.assert_array_equal(d[n], v)
    data = t.delta(240, int8=True)
    assert data == blob.encode_delta(expected, 240, t.manifest, int8=True)  # C and numpy agree bit for bit
    assert len(data) == blob.sizes(t.manifest)[blob.DELTA_I8] < len(t.delta(240)) / 3.5
    q, _ = blob.decode_delta(data, t.manifest)
    for n, v in expected.items():
        scale = np.abs(v).max() / 127
        assert np.abs(q[n] - v).max() <= scale / 2 * (1 + 1e-5), n


def test_begin_round_and_apply_global(build):
    t = trained(build)
    t.begin_round()
    assert all(not v.any() for v in blob.decode_delta(t.delta(1), t.manifest)[0].values())
    g = trained(build, seed=3)
    t.apply_global(g.save_params())
    np.testing.assert_array_equal(t.predict(probe()), g.predict(probe()))
    assert all(not v.any() for v in blob.decode_delta(t.delta(1, int8=True), t.manifest)[0].values())


def test_fedavg_against_numpy(build):
    rng = np.random.default_rng(0)
    g = {n: rng.normal(size=s).astype(np.float32) for n, s in blob.layout(build_manifest(build))}
    deltas = [({n: rng.normal(size=v.shape).astype(np.float32) for n, v in g.items()}, n) for n in (10, 30, 60)]
    new = federated.fedavg(g, deltas)
    for name, value in g.items():
        expected = value + (10 * deltas[0][0][name] + 30 * deltas[1][0][name] + 60 * deltas[2][0][name]) / 100
        np.testing.assert_allclose(new[name], expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(DataError, match="sample count"):
        federated.fedavg(g, [(deltas[0][0], 0)])


@pytest.mark.parametrize("int8", [False, True], ids=["float", "int8"])
def test_delta_and_aggregate_cli(build, tmp_path, int8):
    """Two clients through the CLI: delta files from saved weights, FedAvg into a new blob."""
    m = build_manifest(build)
    start = codegen.load_host(build).get_params()
    clients = [trained(build, steps, seed) for steps, seed in ((10, 4), (30, 5))]
    paths = []
    for k, c in enumerate(clients):
        np.savez(tmp_path / f"c{k}.npz", **c.get_params())
        paths.append(tmp_path / f"d{k}.bin")
        args = ["delta", str(build), "--params", str(tmp_path / f"c{k}.npz"), "--samples", str(100 * (k + 1)),
                "-o", str(paths[-1])] + (["--int8"] if int8 else [])
        assert CliRunner().invoke(app, args).exit_code == 0
        assert paths[-1].read_bytes() == c.delta(100 * (k + 1), int8=int8)  # the device's own bytes
    result = CliRunner().invoke(app, ["aggregate", str(build), *map(str, paths), "-o", str(tmp_path / "g.bin")])
    assert result.exit_code == 0, result.output
    new = blob.decode_params((tmp_path / "g.bin").read_bytes(), m)
    for name, value in start.items():
        d = [c.get_params()[name] - value for c in clients]
        expected = value + (100 * d[0] + 200 * d[1]) / 300
        tol = max(np.abs(x).max() / 127 / 2 for x in d) if int8 else 1e-6
        np.testing.assert_allclose(new[name], expected, atol=tol * 1.0001 + 1e-7)
    other = tmp_path / "other.bin"
    other.write_bytes(paths[0].read_bytes()[:-1])
    result = CliRunner().invoke(app, ["aggregate", str(build), str(paths[1]), str(other), "-o", str(tmp_path / "h.bin")])
    assert result.exit_code == 2 and "truncated" in result.output and not (tmp_path / "h.bin").exists()


def test_no_federated_option(tmp_path):
    summary = codegen.generate(DIGITS / "mlp.onnx", tmp_path / "b", loss="cross_entropy", batch=4,
                               federated=False, name="plain")
    assert summary["federated"] is False
    assert "fl_delta" not in (tmp_path / "b" / "plain.c").read_text()
    t = codegen.load_host(tmp_path / "b")
    t.load_params(t.save_params())
    if shutil.which("gcc"):
        subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-c", "plain.c", "-o",
                        "plain.o"], cwd=tmp_path / "b", check=True)


def test_federated_example(tmp_path):
    """Small configuration of examples/federated: global accuracy rises every round and ends above
    what any client reaches on its own shard."""
    sys.path.insert(0, str(ROOT / "examples" / "federated"))
    try:
        import federated_digits
    finally:
        sys.path.pop(0)
    history = federated_digits.run(clients=5, rounds=4, epochs=1, out_dir=str(tmp_path / "b"), log=lambda *_: None)
    acc = history["accuracy"]
    assert all(b > a for a, b in zip(acc, acc[1:])), acc
    assert acc[-1] > max(history["single"]) + 0.1, (acc, history["single"])
    assert history["bytes_sent"][0] == [blob.sizes(build_manifest(tmp_path / "b"))[blob.DELTA_I8]] * 5


# --- ONNX Runtime training artifacts ------------------------------------------------------------

ORT_SCRIPT = r'''
import io, os, sys, numpy as np, onnx, torch
from onnxruntime.training import artifacts
from onnxruntime.training.api import CheckpointState, Module, Optimizer
out = sys.argv[1]
def make(name, act, loss, optim):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 32), act, torch.nn.Linear(32, 10))
    buf = io.BytesIO()
    torch.onnx.export(m, (torch.zeros(16, 64),), buf, input_names=["x"], output_names=["logits"], dynamo=False,
                      opset_version=17, do_constant_folding=False, training=torch.onnx.TrainingMode.TRAINING)
    model = onnx.load_from_string(buf.getvalue())
    os.makedirs(f"{out}/{name}")
    artifacts.generate_artifacts(model, requires_grad=[i.name for i in model.graph.initializer], loss=loss,
                                 optimizer=optim, artifact_directory=f"{out}/{name}")
make("sgd", torch.nn.ReLU(), artifacts.LossType.CrossEntropyLoss, artifacts.OptimType.SGD)
make("adamw", torch.nn.Tanh(), artifacts.LossType.MSELoss, artifacts.OptimType.AdamW)
make("gelu", torch.nn.GELU(), artifacts.LossType.CrossEntropyLoss, artifacts.OptimType.SGD)
data = np.load(f"{out}/batches.npz")
state = CheckpointState.load_checkpoint(f"{out}/sgd/checkpoint")
module = Module(f"{out}/sgd/training_model.onnx", state, f"{out}/sgd/eval_model.onnx")
opt = Optimizer(f"{out}/sgd/optimizer_model.onnx", module)
opt.set_learning_rate(0.05)
module.train()
losses = []
for x, y in zip(data["x"], data["y"]):
    losses.append(float(module(x, y)))
    opt.step()
    module.lazy_reset_grad()
np.savez(f"{out}/ort_trained.npz", losses=np.array(losses), **{k: p.data for k, p in state.parameters})
'''


def _ort_python() -> Path:
    """The shared onnxruntime-training venv (benchmarks/ort_env.py)."""
    from benchmarks import ort_env

    try:
        return ort_env.python()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot create a venv with {' '.join(ort_env.PACKAGES)}: "
                    f"{(getattr(e, 'stderr', '') or str(e))[-500:]}")


@pytest.fixture(scope="module")
def ort_artifacts(tmp_path_factory):
    out = tmp_path_factory.mktemp("ort")
    rng = np.random.default_rng(0)
    np.savez(out / "batches.npz", x=rng.normal(size=(20, BATCH, 64)).astype(np.float32),
             y=rng.integers(0, 10, (20, BATCH)))
    result = subprocess.run([str(_ort_python()), "-c", ORT_SCRIPT, str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_ort_artifacts_train_like_onnxruntime(ort_artifacts, tmp_path):
    """SGD + cross-entropy artifacts: the C trainer takes the same 20 steps as ORT training."""
    result = CliRunner().invoke(app, ["import-ort", str(ort_artifacts / "sgd"), "-o", str(tmp_path / "b"), "--lr", "0.05"])
    assert result.exit_code == 0, result.output
    t = codegen.load_host(tmp_path / "b")
    assert (t.manifest.loss, t.manifest.optimizer["kind"]) == ("cross_entropy", "sgd")
    data, ref = np.load(ort_artifacts / "batches.npz"), np.load(ort_artifacts / "ort_trained.npz")
    losses = [t.train_step(x, y) for x, y in zip(data["x"], data["y"])]
    np.testing.assert_allclose(losses, ref["losses"], rtol=1e-5, atol=1e-6)
    for name, value in t.get_params().items():
        np.testing.assert_allclose(value, ref[name], atol=2e-5)


def test_ort_artifacts_adamw_mse(ort_artifacts, tmp_path):
    from codegen import ort_import

    summary = ort_import.generate_from_artifacts(ort_artifacts / "adamw", tmp_path / "b", lr=1e-3)
    opt = summary["optimizer"]
    assert summary["loss"] == "mse" and opt["kind"] == "adamw"
    assert (opt["beta1"], opt["beta2"], opt["eps"], opt["weight_decay"]) == pytest.approx((0.9, 0.999, 1e-6, 0.0))
    assert [p["name"] for p in summary["params"]] == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_ort_artifacts_unsupported_op_listed(ort_artifacts, tmp_path):
    result = CliRunner().invoke(app, ["import-ort", str(ort_artifacts / "gelu"), "-o", str(tmp_path / "b")])
    assert result.exit_code == 2 and "does not cover: Gelu" in result.output, result.output
    assert not (tmp_path / "b").exists()
