"""Federated learning of the generated C on Flower: 100 clients, Dirichlet(0.5) label skew.

The digits MLP built at batch 4 (so that 100 clients of 1,397 training samples each hold at least
one batch), a Flower App written by `mcutrain flower-app`, run in-process (codegen.flower.simulate:
the app's own ServerApp and ClientApp, one loaded trainer for all clients) with int8 deltas
through Int8FedAvg. Prints the global held-out accuracy per round and plots it (PNG) next to the
hand-rolled 5-client loop of federated_digits.py.

    python examples/federated/flower_digits.py [--clients 100] [--rounds 10] [--epochs 2] [--plot flower.png]
"""
from __future__ import annotations

import argparse
import importlib.util
import tempfile
from pathlib import Path

import numpy as np

import codegen
from codegen import flower
from codegen.fit import evaluate

HERE = Path(__file__).resolve().parent
DIGITS = HERE.parent / "digits"


def _hand_rolled():
    spec = importlib.util.spec_from_file_location("federated_digits", HERE / "federated_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(clients: int = 100, rounds: int = 10, epochs: int = 2, seed: int = 0, log=print) -> list[float]:
    """Global held-out accuracy before round 1 and after each round."""
    data = np.load(DIGITS / "digits.npz")
    x, y = data["x"], data["y"]
    order = np.random.default_rng(seed).permutation(len(x))
    test, pool = order[:400], order[400:]  # the held-out split of federated_digits.py
    with tempfile.TemporaryDirectory() as tmp:
        build, app = Path(tmp) / "digits", Path(tmp) / "app"
        codegen.generate(DIGITS / "mlp.onnx", build, loss="cross_entropy", lr=0.05, momentum=0.9, batch=4)
        np.savez(Path(tmp) / "train.npz", x=x[pool], y=y[pool])
        codegen.api.flower_app(build, Path(tmp) / "train.npz", app, clients)
        grid = flower.simulate(app, clients, **{"num-server-rounds": rounds, "local-epochs": epochs, "delta": "int8",
                                                "partitioning": "dirichlet", "dirichlet-alpha": 0.5, "seed": seed})
        globals_ = [flower.arrays(grid.rounds[r][0][1].content["arrays"]) for r in sorted(grid.rounds)]
        globals_.append(dict(np.load(app / "files" / flower.RESULT)))
        judge = codegen.load_host(build)
        accuracy = []
        for r, weights in enumerate(globals_):
            judge.set_params(weights)
            accuracy.append(evaluate(judge, x[test], y[test]).value)
            log(f"round {r}: global accuracy {accuracy[-1]:.1%}")
    return accuracy


def plot(flower_curve: list[float], hand_curve: list[float], path: Path, clients: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(len(flower_curve)), flower_curve, "o-", label=f"Flower, {clients} clients, Dirichlet(0.5), batch 4")
    ax.plot(range(len(hand_curve)), hand_curve, "s--", label="hand-rolled loop, 5 clients (3 classes each), batch 16")
    ax.set(xlabel="round", ylabel="global held-out accuracy", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2, help="local epochs per round")
    parser.add_argument("--plot", type=Path, help="PNG comparing with the hand-rolled loop (needs matplotlib)")
    args = parser.parse_args()
    curve = run(args.clients, args.rounds, args.epochs)
    if args.plot:
        hand = _hand_rolled().run(rounds=args.rounds, epochs=args.epochs, log=lambda *_: None)["accuracy"]
        plot(curve, hand, args.plot, args.clients)
        print(f"wrote {args.plot}: hand-rolled loop {' '.join(f'{a:.0%}' for a in hand)}")
