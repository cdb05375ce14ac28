"""`python -m benchmarks.flower_scale [--clients 1000] [--rounds 20]`: many virtual clients of a
Flower App on one machine. The digits MLP (batch 16) over a generated data set of 32 noisy
copies of each digit per client slot (every client holds about 2 batches), through the app's
own ServerApp and ClientApp (codegen.flower.simulate: in-process, one loaded C trainer swapping
every client's weights in); prints the wall time, the time per round and the process's peak RSS."""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

import codegen
from codegen import flower
from codegen.flower_app import write

DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits"
PER_CLIENT = 32


def data(clients: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """PER_CLIENT samples per client: digits with Gaussian noise (sd 1 on their 0-16 scale)."""
    digits = np.load(DIGITS / "digits.npz")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(digits["x"]), clients * PER_CLIENT)
    x = digits["x"][idx] + rng.normal(0, 1 / 16 * float(np.abs(digits["x"]).max()), (len(idx), 64))
    return x.astype(np.float32), digits["y"][idx]


def build_digits(build: Path) -> None:
    """The digits MLP both Flower benchmarks train (batch 16)."""
    codegen.generate(DIGITS / "mlp.onnx", build, loss="cross_entropy", lr=0.05, momentum=0.9, batch=16)


def accuracy(build: Path, app: Path) -> float:
    """Accuracy on the digits of the global model the app wrote."""
    trainer = codegen.load_host(build)
    trainer.set_params(dict(np.load(app / "files" / flower.RESULT)))
    return codegen.fit.evaluate(trainer, *codegen.fit.load_data(DIGITS / "digits.npz")).value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--fraction", type=float, default=1.0, help="fraction-train (and evaluate)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        build, app = Path(tmp) / "digits", Path(tmp) / "app"
        build_digits(build)
        x, y = data(args.clients)
        np.savez(Path(tmp) / "data.npz", x=x, y=y)
        write(build, Path(tmp) / "data.npz", app, args.clients)
        codegen.load_host(build)  # compiled before the clock starts (the cache serves the app)
        start = time.perf_counter()
        flower.simulate(app, args.clients, record=False, **{"num-server-rounds": args.rounds,
                                                           "fraction-train": args.fraction})
        wall = time.perf_counter() - start
        final = accuracy(build, app)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.clients:,} clients x {args.rounds} rounds (fraction {args.fraction}): {wall:.1f} s wall, "
          f"{wall / args.rounds:.2f} s per round (training + evaluation), peak RSS {peak:.0f} MiB; "
          f"final global model on the digits: accuracy {final:.2%}")


if __name__ == "__main__":
    main()
