"""`mcutrain flower-app` and codegen.flower: the app's ServerApp and ClientApp driven in-process
(flower.simulate: a Grid that hands each message to the ClientApp of its node; `flwr run` with
Ray takes about 90 s on 2 cores: benchmarks/flower_run.py), 10 clients x 3 rounds. Each
round's global model must equal `mcutrain aggregate` of the clients' deltas: float weights
averaged by Flower's FedAvg within float32 rounding (atol 2e-7 + rtol 1e-6: Flower sums
n_k/N-weighted float32 weights, aggregate n_k-weighted float64 deltas), int8 deltas through
Int8FedAvg bit for bit (the same validate + fedavg)."""
from __future__ import annotations

import importlib.util
import logging
import tomllib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("flwr", reason="the Flower extra: pip install 'mcutrain[flower]'")
from flwr.app import Array, ArrayRecord, Message  # noqa: E402
from flwr.cli.config_utils import load_and_validate  # noqa: E402
from flwr.cli.flower_config import parse_superlink_connection  # noqa: E402

import codegen  # noqa: E402
from codegen import blob, flower, partition  # noqa: E402
from codegen.cli import app  # noqa: E402
from codegen.errors import DataError, OptionError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits"
CLIENTS, ROUNDS, BATCH = 10, 3, 16


@pytest.fixture(autouse=True)
def flwr_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr_home"))


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    out = tmp_path_factory.mktemp("flower") / "digits"
    codegen.generate(DIGITS / "mlp.onnx", out, loss="cross_entropy", lr=0.05, momentum=0.9, batch=BATCH)
    return out


@pytest.fixture(scope="module")
def app_dir(build, tmp_path_factory):
    out = tmp_path_factory.mktemp("flower") / "app"
    result = CliRunner().invoke(app, ["flower-app", str(build), "--data", str(DIGITS / "digits.npz"),
                                      "-o", str(out), "--clients", str(CLIENTS)])
    assert result.exit_code == 0, result.output
    return out


def run(app_dir: Path, tamper=None, **overrides) -> tuple[flower.LocalGrid, dict]:
    grid = flower.simulate(app_dir, CLIENTS, tamper, **{"num-server-rounds": ROUNDS, **overrides})
    return grid, dict(np.load(app_dir / "files" / flower.RESULT))


def aggregate(build: Path, tmp: Path, start: dict, deltas: list[bytes]) -> dict:
    """`mcutrain aggregate` of `deltas` (files) on the global model `start`."""
    np.savez(tmp / "global.npz", **start)
    paths = []
    for k, data in enumerate(deltas):
        paths.append(tmp / f"d{k}.bin")
        paths[-1].write_bytes(data)
    out = tmp / "new.npz"
    result = CliRunner().invoke(app, ["aggregate", str(build), *map(str, paths), "--global", str(tmp / "global.npz"),
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    return dict(np.load(out))


def globals_by_round(grid: flower.LocalGrid, final: dict) -> list[dict]:
    """The global model each round started from, then the final one."""
    return [flower.arrays(grid.rounds[r][0][1].content["arrays"]) for r in sorted(grid.rounds)] + [final]


def test_app_files(app_dir, build):
    """The app Flower reads: components, run config, the client count as a federation."""
    toml = tomllib.loads((app_dir / "pyproject.toml").read_text())
    flwr_app = toml["tool"]["flwr"]["app"]
    assert flwr_app["components"] == {"serverapp": "mcutrain_flower.server_app:app",
                                      "clientapp": "mcutrain_flower.client_app:app"}
    assert set(flwr_app["config"]) == {*flower_app_keys(), "lr", "files"} and flwr_app["config"]["lr"] == 0.05
    fed = toml["tool"]["flwr"]["federations"]
    assert fed[fed["default"]]["options"]["num-supernodes"] == CLIENTS
    # What `flwr run` checks (components importable from the app folder), no warnings; and the
    # connection Flower 1.42 migrates the federation into.
    assert load_and_validate(app_dir / "pyproject.toml", check_module=True)[1] == []
    assert parse_superlink_connection(fed[fed["default"]], fed["default"]).options.num_supernodes == CLIENTS
    assert toml["project"]["dependencies"] == ["flwr[simulation]==1.42.0"]
    assert (app_dir / "files" / "build" / "mcutrain.json").read_bytes() == (build / "mcutrain.json").read_bytes()
    assert "every client first gets one full training batch" in " ".join((app_dir / "README.md").read_text().split())


def flower_app_keys():
    return {"num-server-rounds", "local-epochs", "fraction-train", "delta", "strategy", "partitioning",
            "dirichlet-alpha", "seed", "proximal-mu", "board", "board-serial", "board-timeout"}


def test_proximal_mu_reaches_the_clients(app_dir, build):
    """proximal-mu (FedProx; its arithmetic: tests/test_fedprox.py): one round with mu > 0 keeps
    the global model nearer its start than mu = 0 does."""
    start = codegen.load_host(build).get_params()
    dist = {mu: sum(float(np.sum((run(app_dir, **{"num-server-rounds": 1, "proximal-mu": mu})[1][n] - v) ** 2))
                    for n, v in start.items()) for mu in (0.0, 1.0)}
    assert 0 < dist[1.0] < dist[0.0], dist


def test_float_weights_fedavg_equals_aggregate(app_dir, build, tmp_path):
    grid, final = run(app_dir)
    assert sorted(grid.rounds) == [1, 2, 3] and all(len(v) == CLIENTS for v in grid.rounds.values())
    m = codegen.manifest.read(build)
    for r, (start, new) in enumerate(zip(globals_by_round(grid, final), globals_by_round(grid, final)[1:]), 1):
        deltas = []
        for node, _, reply in grid.rounds[r]:
            weights = flower.arrays(reply.content["arrays"])
            samples = int(reply.content["metrics"]["num-examples"])
            deltas.append(blob.encode_delta({n: weights[n] - start[n] for n in start}, samples, m))
        expected = aggregate(build, tmp_path, start, deltas)
        for name in start:
            np.testing.assert_allclose(new[name], expected[name], rtol=1e-6, atol=2e-7)
    accuracy = codegen.fit.evaluate(codegen.load_host(build), *codegen.fit.load_data(DIGITS / "digits.npz"))
    assert accuracy.value > 0  # the untrained model, for the comparison below
    trained = codegen.load_host(build)
    trained.set_params(final)
    assert codegen.fit.evaluate(trained, *codegen.fit.load_data(DIGITS / "digits.npz")).value > max(accuracy.value, 0.5)


# Bad replies: a flipped payload byte (CRC), another model's hash (mismatched build), truncated.
TAMPER = {103: lambda d: d[:40] + bytes([d[40] ^ 1]) + d[41:], 105: lambda d: d[:8] + bytes([d[8] ^ 1]) + d[9:],
          107: lambda d: d[:-1]}


def tamper(node: int, reply: Message) -> Message:
    if node in TAMPER:
        data = TAMPER[node](flower._delta_bytes(reply.content))
        reply.content["arrays"] = ArrayRecord({flower.DELTA: Array(np.frombuffer(data, np.uint8))})
    return reply


def test_int8_deltas_refuse_corrupted_client(app_dir, build, tmp_path, caplog):
    """Each round, the three bad replies are refused with a log line naming the node and the
    check; the others are averaged (Dirichlet partitions: unequal sample counts)."""
    with caplog.at_level(logging.WARNING, logger="flwr"):
        grid, final = run(app_dir, tamper=tamper, delta="int8", partitioning="dirichlet")
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == len(TAMPER) * ROUNDS, refused
    for node, what in ((103, "CRC"), (105, "model hash"), (107, "")):
        assert sum(f"client node {node} (format)" in line and what in line for line in refused) == ROUNDS, refused
    for r, (start, new) in enumerate(zip(globals_by_round(grid, final), globals_by_round(grid, final)[1:]), 1):
        good = [flower._delta_bytes(reply.content) for node, _, reply in grid.rounds[r] if node not in TAMPER]
        assert len(good) == CLIENTS - len(TAMPER)
        assert len({int(reply.content["metrics"]["num-examples"]) for _, _, reply in grid.rounds[r]}) > 1
        expected = aggregate(build, tmp_path, start, good)
        for name in start:
            np.testing.assert_array_equal(new[name], expected[name])


@pytest.mark.parametrize("name", ["fedadam", "fedyogi"])
def test_adaptive_strategies_run(app_dir, name):
    """Flower's FedAdam/FedYogi on the float weights: every round changes the model, stays finite."""
    grid, final = run(app_dir, strategy=name, **{"num-server-rounds": 2, "fraction-train": 0.3})
    assert sorted(grid.rounds) == [1, 2] and all(len(v) == 3 for v in grid.rounds.values())
    start = globals_by_round(grid, final)[0]
    assert all(np.isfinite(v).all() for v in final.values())
    assert any(not np.array_equal(final[n], start[n]) for n in start)


def test_int8_needs_fedavg():
    with pytest.raises(OptionError, match="int8 deltas are averaged by FedAvg only"):
        flower.strategy({"strategy": "fedadam", "delta": "int8", "fraction-train": 1.0}, None)


def test_partitions():
    """Deterministic; every client has one full batch; Dirichlet(0.1) skews the labels."""
    y = np.random.default_rng(0).integers(0, 10, 10_000)
    skew = {}
    for method in ("iid", "dirichlet"):
        parts = partition.split(10_000, 50, 16, method, 0.1, seed=3, groups=y)
        again = partition.split(10_000, 50, 16, method, 0.1, seed=3, groups=y)
        assert all(np.array_equal(a, b) for a, b in zip(parts, again))
        assert min(map(len, parts)) >= 16 and np.array_equal(np.sort(np.concatenate(parts)), np.arange(10_000))
        skew[method] = np.mean([np.bincount(y[p], minlength=10).max() / len(p) for p in parts])
    assert skew["iid"] < 0.2 and skew["dirichlet"] > 0.5, skew  # share of a client's main class
    with pytest.raises(DataError, match="use at most 62 clients"):
        partition.check(1000, 63, 16)


@pytest.mark.parametrize("args, message", [
    (["--clients", "0"], "--clients must be at least 1"),
    (["--clients", "113"], "use at most 112 clients"),
    (["--data", "{x3}"], "samples in x have shape (3,), the model takes (64,)"),
    (["--build", "missing"], "is not a generated build folder"),
])
def test_bad_input_writes_nothing(build, tmp_path, args, message):
    np.savez(tmp_path / "x3.npz", x=np.zeros((100, 3), np.float32), y=np.zeros(100, np.int64))
    options = {"--data": str(DIGITS / "digits.npz"), "--build": str(build)}
    rest = []
    for key, value in zip(args[::2], args[1::2]):
        if key in options:
            options[key] = str(tmp_path / "x3.npz") if value == "{x3}" else str(tmp_path / value)
        else:
            rest += [key, value]
    out = tmp_path / "app"
    result = CliRunner().invoke(app, ["flower-app", options["--build"], "--data", options["--data"], "-o", str(out), *rest])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert not out.exists()


def test_flower_example():
    """examples/federated/flower_digits.py, small: Dirichlet clients at batch 4, int8 deltas."""
    spec = importlib.util.spec_from_file_location("flower_digits", ROOT / "examples" / "federated" / "flower_digits.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    accuracy = example.run(clients=20, rounds=3, epochs=1, log=lambda *_: None)
    assert len(accuracy) == 4 and accuracy[-1] > accuracy[0] + 0.1, accuracy
