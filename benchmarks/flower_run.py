"""`python -m benchmarks.flower_run [--clients 10] [--rounds 3] [--board cortex-m4f]`: the Flower App
of the digits MLP through `flwr run APP_DIR` (Flower's local SuperLink and its Ray simulation
runtime), with FLWR_HOME in a temporary folder; prints the wall time and checks the global model
was written. With --board, client 0 is that board's federated firmware under QEMU (flower-app
--board); the script checks that every round used its delta and that no emulator outlives the run.
`flwr run` leaves its local SuperLink running in the background; this script stops the one it
started (found by its FLWR_HOME). A SuperLink already running on Flower's fixed local port would
take the run instead: the script refuses to start then."""
from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import codegen
from benchmarks.flower_scale import DIGITS, accuracy, build_digits
from codegen import flower
from codegen.flower_app import write

ROOT = Path(__file__).resolve().parent.parent
CONTROL_PORT = 39093  # Flower 1.42's local SuperLink control API (flwr.cli.constant)


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _stop_superlinks(home: Path) -> int:
    """Stop the flower-superlink processes started with this FLWR_HOME (their children end with them)."""
    stopped = 0
    for pid, cmd in _processes():
        if any(b"flower-superlink" in c for c in cmd) and any(str(home).encode() in c for c in cmd):
            os.kill(pid, signal.SIGTERM)
            stopped += 1
    return stopped


def _check_board(log: str, app: Path, rounds: int) -> None:
    """Every round averaged all clients (the board's delta among them), and no emulator of this
    app's firmware is left running."""
    failures = re.findall(r"aggregate_train: Received \d+ results and (\d+) failures", log)
    if len(failures) != rounds or any(int(f) for f in failures) or "no delta from board" in log:
        raise SystemExit(f"a round went without the board's delta:\n{log[-3000:]}")
    time.sleep(2)
    left = [p for p in _processes() if b"qemu-system" in p[1][0] and any(str(app).encode() in c for c in p[1])]
    if left:
        raise SystemExit(f"emulators left running after the run: {[pid for pid, _ in left]}")


def _processes():
    """(pid, argv) of this machine's processes."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit():
                yield int(proc.name), (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--board", help="a target: client 0 is its federated firmware under QEMU")
    args = parser.parse_args()
    if _port_busy(CONTROL_PORT):
        raise SystemExit(f"a Flower SuperLink already listens on 127.0.0.1:{CONTROL_PORT}; stop it first")
    with tempfile.TemporaryDirectory() as tmp:
        build, app, home = Path(tmp) / "digits", Path(tmp) / "app", Path(tmp) / "flwr_home"
        build_digits(build)
        write(build, DIGITS / "digits.npz", app, args.clients, args.board)
        codegen.load_host(build)  # compiled before the clock starts (the cache serves the clients)
        # This checkout's codegen for the app's processes, whether or not mcutrain is installed.
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "FLWR_HOME": str(home), "PYTHONPATH": path}
        start = time.perf_counter()
        try:
            run = subprocess.run(["flwr", "run", str(app), "--stream", "--run-config", f"num-server-rounds={args.rounds}"],
                                 env=env, capture_output=True, text=True, timeout=900)
        finally:
            _stop_superlinks(home)
        wall = time.perf_counter() - start
        result = app / "files" / flower.RESULT
        if run.returncode or not result.is_file():
            raise SystemExit(f"flwr run failed (exit {run.returncode}, no {result.name}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
        if args.board:
            _check_board(run.stdout + run.stderr, app, args.rounds)
        final = accuracy(build, app)
    board = f" (client 0: the {args.board} firmware under QEMU)" if args.board else ""
    print(f"flwr run: {args.clients} clients{board} x {args.rounds} rounds in {wall:.1f} s wall (SuperLink start, "
          f"app environment, Ray); final global model: accuracy {final:.2%} on the digits")


if __name__ == "__main__":
    main()
