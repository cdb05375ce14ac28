"""Train the bundled digits MLP with the generated C (host build) and report held-out accuracy
before and after: the Python API, step by step."""
import sys
import tempfile
from pathlib import Path

import numpy as np

import codegen
from codegen.fit import evaluate, fit

HERE = Path(__file__).parent


def main(epochs: int = 5, out_dir: str | None = None) -> tuple[float, float]:
    data = np.load(HERE / "digits.npz")
    x, y = data["x"], data["y"]
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1400], order[1400:]
    out_dir = out_dir or tempfile.mkdtemp(prefix="digits-")
    summary = codegen.generate(HERE / "mlp.onnx", out_dir, loss="cross_entropy", lr=0.05, momentum=0.9,
                               batch=16, name="digits")
    print(f"generated {out_dir}: arena {summary['memory']['arena_bytes']} B, "
          f"parameters {summary['memory']['param_bytes']} B")
    trainer = codegen.load_host(out_dir)
    before = evaluate(trainer, x[test], y[test])
    for epoch, result in enumerate(fit(trainer, x[train], y[train], epochs), 1):
        print(f"epoch {epoch}: train {result}")
    after = evaluate(trainer, x[test], y[test])
    print(f"held-out accuracy: before {before.value:.1%}, after {after.value:.1%}")
    return before.value, after.value


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
