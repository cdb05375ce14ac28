"""A board in a Flower round: `mcutrain flower-app --board cortex-m4f` builds the federated
firmware (build --harness federated, partition 0 embedded) and the app's ServerApp runs, in
process (flower.simulate), with host clients and that firmware under QEMU behind its UART
(flower_gateway, board_link). The board's delta must equal what the host trainer computes from
the same global model on the same samples in the same order within rtol/atol 1e-5 (DECISIONS.md
§4: the board's scalar kernels sum in another order than the host's vector kernels; measured
max 1.5e-8 on deltas up to 0.05); each round's global model is FedAvg of the board's and the
host clients' replies. A corrupted delta from the board is refused (log line naming it) and the round goes
on with the others; builds made with --no-federated get no federated harness. A model whose
weights train as integers sends its MTDI delta over the line, equal to the host's bit for bit."""
from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("flwr", reason="the Flower extra: pip install 'mcutrain[flower]'")

import codegen  # noqa: E402
from codegen import blob, board_link, federated, fit, flower, flower_gateway, partition, qemu  # noqa: E402
from codegen.cli import app  # noqa: E402
from codegen.errors import DataError  # noqa: E402
from codegen.manifest import read as read_manifest  # noqa: E402
from test_boards import need  # noqa: E402

DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits"
CLIENTS, BATCH, SAMPLES, BOARD = 4, 16, 256, "cortex-m4f"
BOARD_NODE = 100  # LocalGrid's node of partition 0


@pytest.fixture(autouse=True)
def flwr_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr_home"))


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("board")
    x, y = fit.load_data(DIGITS / "digits.npz")
    np.savez(tmp / "data.npz", x=x[:SAMPLES], y=y[:SAMPLES])
    codegen.generate(DIGITS / "mlp.onnx", tmp / "digits", loss="cross_entropy", lr=0.05, momentum=0.9, batch=BATCH)
    return tmp / "digits"


@pytest.fixture(scope="module")
def app_dir(build):
    need(BOARD)
    out = build.parent / "app"
    result = CliRunner().invoke(app, ["flower-app", str(build), "--data", str(build.parent / "data.npz"),
                                      "-o", str(out), "--clients", str(CLIENTS), "--board", BOARD])
    assert result.exit_code == 0, result.output
    assert f"client 0 is the {BOARD} board" in " ".join(result.output.split())
    yield out
    flower_gateway.close_all()


def board_samples(app_dir):
    """Partition 0 of the app's data: what the firmware embeds."""
    x, y = fit.load_data(app_dir / "files" / flower.DATA)
    first = partition.of_data(y, 10, CLIENTS, BATCH, "iid", 0.5, 0)[0]
    return x[first], y[first]


def host_delta(app_dir, start: dict) -> dict:
    """The round on the host trainer: the global model applied, one epoch over partition 0 in order."""
    build = app_dir / "files" / flower.BUILD
    trainer = codegen.load_host(build)
    trainer.apply_global(blob.encode_params(start, read_manifest(build)))
    x, y = board_samples(app_dir)
    for i in range(0, len(x), BATCH):
        trainer.train_step(x[i:i + BATCH], y[i:i + BATCH])
    return federated.delta(trainer.weights(), start)


def test_board_round_matches_host(app_dir):
    grid = flower.simulate(app_dir, CLIENTS, **{"num-server-rounds": 2})
    final = dict(np.load(app_dir / "files" / flower.RESULT))
    starts = [flower.arrays(grid.rounds[r][0][1].content["arrays"]) for r in (1, 2)] + [final]
    for r in (1, 2):
        start, replies = starts[r - 1], {node: reply for node, _, reply in grid.rounds[r]}
        assert sorted(replies) == [100, 101, 102, 103] and not any(m.has_error() for m in replies.values())
        board = flower.arrays(replies[BOARD_NODE].content["arrays"])
        assert int(replies[BOARD_NODE].content["metrics"]["num-examples"]) == len(board_samples(app_dir)[0])
        expected = host_delta(app_dir, start)
        for name in start:
            np.testing.assert_allclose(board[name] - start[name], expected[name], rtol=1e-5, atol=1e-5)
        deltas = [({n: flower.arrays(m.content["arrays"])[n] - start[n] for n in start},
                   int(m.content["metrics"]["num-examples"])) for m in replies.values()]
        new = federated.fedavg(start, deltas)
        for name in start:
            np.testing.assert_allclose(starts[r][name], new[name], rtol=1e-6, atol=2e-7)


def test_corrupted_board_delta_is_refused(app_dir, monkeypatch, caplog):
    """One flipped payload byte on the line: the gateway's validate refuses the board's int8 delta
    (CRC), the strategy logs the error reply of its node and averages the three host clients."""
    honest = board_link.Board.round

    def flipped(self, params_blob, int8=False):
        loss, data = honest(self, params_blob, int8)
        return loss, data[:40] + bytes([data[40] ^ 1]) + data[41:]

    monkeypatch.setattr(board_link.Board, "round", flipped)
    with caplog.at_level(logging.INFO, logger="flwr"):
        grid = flower.simulate(app_dir, CLIENTS, delta="int8", **{"num-server-rounds": 1})
    lines = [r.getMessage() for r in caplog.records]
    assert any(f"no delta from board {BOARD} (client node {BOARD_NODE})" in s and "CRC" in s for s in lines), lines
    assert any(f"error in reply from node {BOARD_NODE}" in s and "CRC" in s for s in lines), lines
    manifest = read_manifest(app_dir / "files" / flower.BUILD)
    start = flower.arrays(grid.rounds[1][0][1].content["arrays"])
    good = [federated.validate(flower._delta_bytes(reply.content), manifest, str(node))
            for node, _, reply in grid.rounds[1] if node != BOARD_NODE]
    expected = federated.fedavg(start, good)
    final = dict(np.load(app_dir / "files" / flower.RESULT))
    for name in start:
        np.testing.assert_array_equal(final[name], expected[name])


def test_board_refuses_a_corrupted_global_model(app_dir):
    """The firmware checks the blob's CRC itself (MTER -7) and then still serves the next round."""
    build = app_dir / "files" / flower.BUILD
    manifest = read_manifest(build)
    good = blob.encode_params(codegen.load_host(build).get_params(), manifest)
    board = board_link.Board.emulate(build, BOARD, manifest, timeout=60)
    try:
        with pytest.raises(DataError, match=r"refused the global model: crc check \(code -7"):
            board.round(good[:30] + bytes([good[30] ^ 4]) + good[31:])
        loss, data = board.round(good, int8=True)
        assert np.isfinite(loss) and blob.decode_delta(data, manifest)[1] == len(board_samples(app_dir)[0])
    finally:
        board.close()
    assert board.process.returncode == 0


def test_board_run_config_must_match_its_firmware(app_dir, caplog):
    """local-epochs, lr and proximal-mu are compiled into the board: another value is an error reply."""
    with caplog.at_level(logging.WARNING, logger="flwr"):
        grid = flower.simulate(app_dir, CLIENTS, **{"num-server-rounds": 1, "local-epochs": 2})
    board = [reply for node, _, reply in grid.rounds[1] if node == BOARD_NODE][0]
    assert board.has_error() and "local-epochs=2 (its firmware trains 1" in board.error.reason


def test_federated_harness_refusals(build, tmp_path):
    """Exit 2 before compiling: a --no-federated build, a target without a UART, an unknown
    harness; and `mcutrain run` does not start a federated client."""
    codegen.generate(DIGITS / "mlp.onnx", tmp_path / "nofed", loss="cross_entropy", batch=BATCH, federated=False)
    data = str(build.parent / "data.npz")
    for folder, target, harness, message in (
            (tmp_path / "nofed", BOARD, "federated", "--harness federated needs a build made with --federated"),
            (build, "cortex-m33f", "federated", "target 'cortex-m33f' has no [uart] section"),
            (build, BOARD, "serial", "--harness must be one of train, federated")):
        result = CliRunner().invoke(app, ["build", str(folder), "--target", target, "--data", data,
                                          "--harness", harness])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
        assert not (folder / target).exists()


def test_run_refuses_federated_firmware(app_dir):
    result = CliRunner().invoke(app, ["run", str(app_dir / "files" / flower.BUILD), "--target", BOARD])
    assert result.exit_code == 2 and "is a federated client" in " ".join(result.output.split()), result.output


def test_size_names_the_round_start_copy(app_dir):
    """The federated harness links the round-start copy (the train harness does not): size names it."""
    result = CliRunner().invoke(app, ["size", str(app_dir / "files" / flower.BUILD), "--target", BOARD])
    text = " ".join(result.output.split())
    assert result.exit_code == 0 and "federated round-start copy" in text and "serial message buffer" in text, text


def test_int8_trained_board_delta_is_exact(build, tmp_path):
    """A model whose weights train as integers (generate --update int8) sends MTDI deltas, larger
    than its float32 delta would be: the firmware's buffer holds them, and they equal the host
    trainer's bit for bit (integer arithmetic, DECISIONS.md §4)."""
    need(BOARD)
    x, y = fit.load_data(build.parent / "data.npz")
    np.savez(tmp_path / "calibration.npz", x=x[:64])
    codegen.generate(DIGITS / "mlp.onnx", tmp_path / "q", loss="cross_entropy", lr=0.01, batch=BATCH,
                     quantize="int8", calibration=tmp_path / "calibration.npz", update="int8")
    codegen.firmware.build(tmp_path / "q", BOARD, x[:64], y[:64], harness="federated")
    manifest, host = read_manifest(tmp_path / "q"), codegen.load_host(tmp_path / "q")
    start = host.save_params()
    board = board_link.Board.emulate(tmp_path / "q", BOARD, manifest, timeout=60)
    try:
        _, data = board.round(start)
    finally:
        board.close()
    host.apply_global(start)
    for i in range(0, 64, BATCH):
        host.train_step(x[i:i + BATCH], y[i:i + BATCH])
    assert data[:4] == blob.DELTA_INT and len(data) > blob.sizes(manifest)[blob.DELTA_F32]
    assert data == host.delta(64)


def test_ns16550_board(build):
    """The other UART driver (16550, RISC-V virt): one round equals the host trainer's within 1e-5."""
    need("rv32imafc")
    x, y = fit.load_data(build.parent / "data.npz")
    folder = build
    codegen.firmware.build(folder, "rv32imafc", x[:64], y[:64], harness="federated")
    manifest, host = read_manifest(folder), codegen.load_host(folder)
    start = host.get_params()
    board = board_link.Board.emulate(folder, "rv32imafc", manifest, timeout=60)
    try:
        _, data = board.round(blob.encode_params(start, manifest))
    finally:
        board.close()
    host.apply_global(blob.encode_params(start, manifest))
    for i in range(0, 64, BATCH):
        host.train_step(x[i:i + BATCH], y[i:i + BATCH])
    change, samples = blob.decode_delta(data, manifest)
    assert samples == 64 and board.process.returncode == 0
    for name, value in federated.delta(host.weights(), start).items():
        np.testing.assert_allclose(change[name], value, rtol=1e-5, atol=1e-5)


def test_serial_device(app_dir):
    """board-serial=DEVICE: the line as a tty (QEMU's UART on a pty stands in for a USB serial
    adapter), set to raw bytes by Board.open: an int8 round, then MTSP ends the firmware."""
    build = app_dir / "files" / flower.BUILD
    target = need(BOARD)
    elf = codegen.firmware.out_dir(build, target) / codegen.firmware.FIRMWARE
    process = subprocess.Popen(qemu.command(target, elf) + ["-serial", "pty"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        device = re.search(r"/dev/pts/\d+", process.stdout.readline()).group(0)
        manifest = read_manifest(build)
        board = board_link.Board.open(device, manifest, timeout=60)
        _, data = board.round(blob.encode_params(codegen.load_host(build).get_params(), manifest), int8=True)
        board.close()
        assert blob.decode_delta(data, manifest)[1] == len(board_samples(app_dir)[0])
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()
