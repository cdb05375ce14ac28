"""Memory per training step: what the planner achieves vs. what it could and what PyTorch uses.

For each suite model (and a one-layer transformer encoder, a GRU classifier) and trainable set: bytes if every activation/gradient had its own buffer
(naive), the lower bound for the schedule (peak of live bytes), the arena the planner assigns,
parameters + optimizer state, and PyTorch's measured peak RSS growth over one training step of the
same model (a fresh process per case; its peak resident set before vs. after the step).

    python benchmarks/memory.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.models import LR, MEMORY_SUITE  # noqa: E402
from codegen import api, training  # noqa: E402


TORCH_STEP = r"""
import json, sys
import torch
sys.path.insert(0, {root!r})
from benchmarks.models import MEMORY_SUITE
from benchmarks.timing import peak_rss
torch.set_num_threads(1)
suite = next(s for s in MEMORY_SUITE if s.name == {name!r})
model = suite.module()
names = set({trainable!r})
params = [p for n, p in model.named_parameters()  # a recurrent layer's B is bias_ih and bias_hh
          if p.requires_grad_(n.replace("bias_hh", "bias_ih") in names).requires_grad]
opt = torch.optim.SGD(params, lr={lr!r}, momentum={momentum!r})
x = torch.randn({batch}, *suite.sample)
y = torch.randint(0, suite.outputs, ({batch},)) if suite.loss == "cross_entropy" else torch.rand({batch}, suite.outputs)
loss_fn = torch.nn.functional.cross_entropy if suite.loss == "cross_entropy" else torch.nn.functional.mse_loss
before = peak_rss()
opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
print(json.dumps({{"peak_growth_bytes": peak_rss() - before}}))
"""


def torch_peak(name: str, batch: int, trainable: list[str], momentum: float) -> int:
    code = TORCH_STEP.format(root=str(ROOT), name=name, trainable=trainable, lr=LR, momentum=momentum, batch=batch)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_growth_bytes"]


def measure(suite, batch: int, choice: str, momentum: float, tmp: Path) -> dict:
    path = suite.export(batch, tmp / f"{suite.name}_{batch}.onnx")
    spec = api.Spec(suite.loss, training.Optimizer(LR, momentum), api.CHOICES[choice])
    _, tg, plan = api.compile_plan(path, spec)
    mem = api._summary(tg, plan, suite.name, str(path))["memory"]
    return {"model": suite.name, "batch": batch, "train": choice, "momentum": momentum,
            "naive": plan.naive_bytes, "bound": plan.lower_bound, "arena": plan.arena_bytes,
            "params+state": mem["param_bytes"] + mem["optimizer_state_bytes"],
            "torch": torch_peak(suite.name, batch, tg.trainable, momentum)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 1, plain SGD only (CI)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    cases = [(b, c, m) for b in ((1,) if args.quick else (1, 32)) for c in api.CHOICES
             for m in ((0.0,) if args.quick else (0.0, 0.9))]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for suite in MEMORY_SUITE:
            for batch, choice, momentum in cases:
                rows.append(measure(suite, batch, choice, momentum, Path(tmp)))
    table = Table("model", "batch", "train", "SGD momentum", "naive B", "lower bound B", "arena B",
                  "arena/bound", "params+state B", "PyTorch step peak B",
                  title="memory per training step (arena: activations + gradients)")
    for r in rows:
        table.add_row(r["model"], str(r["batch"]), r["train"], str(r["momentum"]), f"{r['naive']:,}",
                      f"{r['bound']:,}", f"{r['arena']:,}", f"{r['arena'] / max(r['bound'], 1):.3f}",
                      f"{r['params+state']:,}", f"{r['torch']:,}")
    Console(width=200).print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
