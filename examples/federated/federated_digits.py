"""Federated learning with the generated C, simulated on the host.

K clients (each an independent cffi instance of the same generated trainer, as K devices would
each run their own copy) hold non-IID shards of scikit-learn's digits (examples/digits/digits.npz):
each client sees mostly 3 of the 10 classes. Every round the server sends the global parameter
blob, each client applies it (<prefix>_fl_apply_global), trains locally and sends back its delta
message (<prefix>_fl_delta, int8 by default), and the server averages the deltas weighted by
sample counts (FedAvg). Prints the global held-out accuracy per round and the bytes each client
sends, then trains every client alone on its own shard for as many epochs: none of them gets close.

    python examples/federated/federated_digits.py [--clients 5] [--rounds 10] [--epochs 2] [--float]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import codegen
from codegen import blob, federated
from codegen.fit import evaluate, fit

DIGITS = Path(__file__).resolve().parent.parent / "digits"


def non_iid_shards(y: np.ndarray, clients: int, rng: np.random.Generator, classes_each: int = 3,
                   stray: float = 0.1) -> list[np.ndarray]:
    """Client k owns classes 2k .. 2k+classes_each-1 (mod 10); a sample goes to a random owner of
    its class, or with probability `stray` to any client."""
    owners = {c: [k for k in range(clients) if (c - 2 * k) % 10 < classes_each] or list(range(clients))
              for c in range(10)}
    dest = np.array([rng.integers(clients) if rng.random() < stray else rng.choice(owners[int(c)]) for c in y])
    return [np.flatnonzero(dest == k) for k in range(clients)]


def run(clients: int = 5, rounds: int = 10, epochs: int = 2, int8: bool = True, seed: int = 0,
        out_dir: str | None = None, log=print) -> dict:
    data = np.load(DIGITS / "digits.npz")
    x, y = data["x"], data["y"]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    test, pool = order[:400], order[400:]
    shards = [pool[s] for s in non_iid_shards(y[pool], clients, rng)]
    out_dir = out_dir or tempfile.mkdtemp(prefix="federated-")
    codegen.generate(DIGITS / "mlp.onnx", out_dir, loss="cross_entropy", lr=0.05, momentum=0.9, batch=16,
                     name="digits")
    devices = [codegen.load_host(out_dir) for _ in range(clients)]  # independent C states
    server = codegen.load_host(out_dir)  # evaluates the global model
    manifest = server.manifest
    for k, s in enumerate(shards):
        top = np.bincount(y[s], minlength=10).argsort()[::-1][:3]
        log(f"client {k}: {len(s)} samples, mostly classes {sorted(top.tolist())}")

    global_blob = server.save_params()
    history = {"accuracy": [evaluate(server, x[test], y[test]).value], "bytes_sent": [], "bytes_received": len(global_blob)}
    log(f"round 0: global accuracy {history['accuracy'][0]:.1%}")
    for r in range(1, rounds + 1):
        messages = []
        for k, (device, s) in enumerate(zip(devices, shards)):
            device.apply_global(global_blob)  # what the device receives
            for _ in fit(device, x[s], y[s], epochs, seed=seed + 1000 * r + k):
                pass
            messages.append(device.delta(len(s) * epochs, int8=int8))  # what the device sends
        new = federated.fedavg(blob.decode_params(global_blob, manifest),
                               [blob.decode_delta(m, manifest) for m in messages])
        global_blob = blob.encode_params(new, manifest)
        server.load_params(global_blob)
        history["accuracy"].append(evaluate(server, x[test], y[test]).value)
        history["bytes_sent"].append([len(m) for m in messages])
        log(f"round {r}: global accuracy {history['accuracy'][-1]:.1%}, each client sent "
            f"{len(messages[0]):,} B ({'int8' if int8 else 'float32'} delta) and received {len(global_blob):,} B")
    sizes = blob.sizes(manifest)
    log(f"delta size per client per round: float32 {sizes[blob.DELTA_F32]:,} B, int8 {sizes[blob.DELTA_I8]:,} B "
        f"({sizes[blob.DELTA_F32] / sizes[blob.DELTA_I8]:.1f}x smaller)")

    history["single"] = []
    for k, s in enumerate(shards):  # the alternative without federation: each client on its own
        alone = codegen.load_host(out_dir)
        for _ in fit(alone, x[s], y[s], rounds * epochs, seed=seed + k):
            pass
        history["single"].append(evaluate(alone, x[test], y[test]).value)
    log("trained alone for as many epochs: " + ", ".join(f"client {k} {a:.1%}" for k, a in enumerate(history["single"])))
    log(f"federated {history['accuracy'][-1]:.1%} vs best single client {max(history['single']):.1%}")
    return history


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2, help="local epochs per round")
    parser.add_argument("--float", dest="int8", action="store_false", help="send float32 deltas")
    args = parser.parse_args()
    run(args.clients, args.rounds, args.epochs, args.int8)
