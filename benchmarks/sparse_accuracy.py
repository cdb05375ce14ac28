"""Does a sparse update inside 256 KB adapt a quantized model as well as full fine-tuning? (issue
18's accuracy proof, after Lin et al., "On-Device Training Under 256KB Memory", NeurIPS 2022.)

A MobileNetV2-style network (32x32x3, inverted residual blocks, BatchNorm folded by the exporter)
is pretrained in PyTorch on the source domain of benchmarks/shapes.py (40 classes), given a fresh
10-class head, exported to ONNX and quantized by mcutrain (`generate(quantize="int8",
calibration=...)` on source images, as a factory would). It is then fine-tuned on the target
domain (ten of the classes as another sensor sees them: other colours, more noise, a background
pretraining never saw) by the generated C on the host (batch 1, 8 micro-batches per step, SGD
with momentum), once per scheme and learning rate (LRS: the best on a validation share of the
fine-tuning images is kept), and scored on held-out target images. Schemes run in parallel,
one process each (--jobs). RAM is the memory plan's arena + trainable parameters +
optimizer state (no federated copy).

    python -m benchmarks.sparse_accuracy [--keep DIR]          # the full study (about 25 minutes on 2 cores)
    python -m benchmarks.sparse_accuracy --samples 64 --epochs 1 --pretrain 256   # a quick look

Prints the table and exits 1 when the goals are missed: last layer >= 3 points below full
fine-tuning, sparse update within 256 KB and within 1.5 points of it."""
from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import codegen  # noqa: E402
from benchmarks import shapes  # noqa: E402
from benchmarks.int8_fit import InvertedResidual, _conv_bn  # noqa: E402
from codegen import budget, calibrate  # noqa: E402
from codegen.fit import evaluate, fit  # noqa: E402

BUDGET = 256 * 1024
BATCH, ACCUMULATE, MOMENTUM = 1, 8, 0.9
LRS = (0.01, 0.03, 0.003, 0.001)  # each scheme keeps the one that scores best on the validation images
VALIDATION = 0.2  # share of the fine-tuning images held back to choose the learning rate
GAP_LAST_LAYER, GAP_SPARSE = 3.0, 1.5  # points of held-out accuracy (the goals)
# (expansion t, channels c, blocks n, first stride s), as torchvision's MobileNetV2 table
BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 48, 2, 1)]
LAST = 160  # channels of the final pointwise convolution


def network(classes: int) -> nn.Module:
    """Stem 3x3/2, the BLOCKS, a 1x1 conv to LAST channels, global average, linear, numbered as
    nn.Sequential numbers them: 0-2 the stem, then one per block, then the final conv."""
    torch.manual_seed(0)
    cin = BLOCKS[0][1]
    layers = _conv_bn(3, cin, 3, 2)
    for t, c, n, s in BLOCKS:
        for k in range(n):
            layers.append(InvertedResidual(cin, c, s if k == 0 else 1, t))
            cin = c
    return nn.Sequential(*layers, *_conv_bn(cin, LAST, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(LAST, classes))


FINAL_CONV = 3 + sum(n for _, _, n, _ in BLOCKS)  # its index; the blocks are 3 .. FINAL_CONV - 1
LAST_BLOCKS = range(FINAL_CONV - 3, FINAL_CONV)


@dataclass(frozen=True)
class Scheme:
    name: str
    int8: bool  # the quantized model (frozen layers int8) or the float32 one
    options: dict = field(default_factory=dict)  # codegen.generate's selection options
    ranked_on_data: bool = False  # --auto-sparse: contribution analysis on the fine-tuning data


# TTE's sparse pattern: the biases of the last layers, some channels of the first (expanding)
# pointwise conv of the last blocks and of the final conv, and the head.
BIASES = dict(train_last=1, train_bias_last=12)
CHANNELS = [f"{b}.body.0.weight:0.5" for b in LAST_BLOCKS] + [f"{FINAL_CONV}.weight:0.25"]
SCHEMES = [
    Scheme("float32, full fine-tune", False),
    Scheme("float32, last layer", False, dict(train_last=1)),
    Scheme("int8, last layer", True, dict(train_last=1)),
    Scheme("int8, head + biases of the last 12 layers", True, BIASES),
    Scheme("int8, sparse, float update: + channels of the last convs", True, dict(BIASES, train_channels=CHANNELS)),
    Scheme("int8, sparse, int8 update (QAS): the same", True, dict(BIASES, train_channels=CHANNELS, update="int8")),
    Scheme(f"int8, --auto-sparse --ram-budget {BUDGET}", True, dict(ram_budget=BUDGET, auto_sparse=True),
           ranked_on_data=True),
    Scheme(f"int8, --auto-sparse --ram-budget {BUDGET} --update int8", True,
           dict(ram_budget=BUDGET, auto_sparse=True, update="int8"), ranked_on_data=True),
]


def pretrain(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int) -> nn.Module:
    """PyTorch, Adam with a cosine schedule, batches of 64, train mode (BatchNorm statistics), one
    thread (the same result every run on a machine)."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps = epochs * max(1, len(x) // 64)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    rng = np.random.default_rng(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model.train()
    try:
        for _ in range(epochs):
            for idx in np.array_split(rng.permutation(len(x)), max(1, len(x) // 64)):
                loss = nn.functional.cross_entropy(model(torch.from_numpy(x[idx])), torch.from_numpy(y[idx]))
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def new_head(model: nn.Module, classes: int) -> nn.Module:
    """The pretrained features under a fresh (seeded) linear classifier for the target's classes."""
    torch.manual_seed(1)
    model[-1] = nn.Linear(model[-1].in_features, classes)
    return model


def export(model: nn.Module, path: Path) -> Path:
    """ONNX at batch 1, BatchNorm folded into the convolutions, convolutions named after their
    modules (name_convs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, shapes.SIZE, shapes.SIZE),), str(path), input_names=["x"],
                          output_names=["y"], opset_version=18, dynamo=False)
    return name_convs(path, model)


def name_convs(path: Path, model: nn.Module) -> Path:
    """Rename each Conv's weight and bias in the ONNX file after its PyTorch module (`7.body.0.weight`),
    so --train-channels patterns can say which layer: with BatchNorm folded the exporter calls
    them onnx::Conv_<k>. The Conv nodes come in the modules' order (a sequential network)."""
    proto = onnx.load(str(path))
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    renamed = {}
    for module, node in zip(convs, (n for n in proto.graph.node if n.op_type == "Conv"), strict=True):
        for slot, kind in ((1, "weight"), (2, "bias")):
            renamed[node.input[slot]] = f"{module}.{kind}"
    for node in proto.graph.node:
        node.input[:] = [renamed.get(i, i) for i in node.input]
    for init in proto.graph.initializer:
        init.name = renamed.get(init.name, init.name)
    onnx.save(proto, str(path))
    return path


def quantize(model: Path, calibration: Path, folder: Path) -> Path:
    """The QDQ model mcutrain's --quantize int8 makes of `model` (written next to any trainer)."""
    codegen.generate(model, folder, loss="cross_entropy", batch=BATCH, federated=False, train_last=1, quantize="int8",
                     calibration=calibration)
    return folder / calibrate.QUANTIZED_MODEL


def run_scheme(scheme: Scheme, models: dict[bool, Path], train, test, epochs: int, out: Path) -> dict:
    """Generate the scheme's trainer; fine-tune a fresh copy in the C per learning rate on most of
    `train`, keep the one best on the rest, score it on `test`."""
    data = {}
    if scheme.ranked_on_data:
        data["calibration"] = out.parent / f"{out.name}_target_train.npz"  # one per scheme: they run at once
        np.savez(data["calibration"], x=train[0], y=train[1])
    start = time.perf_counter()
    summary = codegen.generate(models[scheme.int8], out, loss="cross_entropy", lr=LRS[0], momentum=MOMENTUM,
                               batch=BATCH, accumulate=ACCUMULATE, federated=False, **scheme.options, **data)
    cut = len(train[0]) - max(BATCH * ACCUMULATE, round(len(train[0]) * VALIDATION))
    best = None
    for lr in LRS:
        trainer = codegen.load_host(out)  # its own copy of the C state: the pretrained weights
        trainer.set_lr(lr)
        for _ in fit(trainer, train[0][:cut], train[1][:cut], epochs):
            pass
        score = evaluate(trainer, train[0][cut:], train[1][cut:]).value
        if best is None or score > best[0]:
            best = (score, lr, evaluate(trainer, *test).value)
    return {"scheme": scheme.name, "ram": budget.ram_bytes(summary["memory"]), "accuracy": best[2], "lr": best[1],
            "params": summary["memory"]["param_bytes"], "seconds": time.perf_counter() - start,
            "chosen": summary.get("auto_sparse")}


def study(folder: Path, pretrain_samples: int, samples: int, test_samples: int, pretrain_epochs: int,
          epochs: int, schemes=SCHEMES, jobs: int = 1, seed: int = 1) -> list[dict]:
    """Pretrain and quantize (once per folder and sizes), then one row per scheme, `jobs` schemes at
    a time; `seed` draws the target images (the fine-tuning ones, then the held-out ones)."""
    source = shapes.make(shapes.SOURCE, pretrain_samples, seed=0)
    model = folder / f"pretrained_{pretrain_samples}_{pretrain_epochs}.onnx"
    if not model.exists():
        pretrained = pretrain(network(shapes.SOURCE.n_classes), *source, pretrain_epochs)
        export(new_head(pretrained, shapes.TARGET.n_classes), model)
    calibration = folder / "calibration.npz"
    np.savez(calibration, x=source[0][:256])
    models = {False: model, True: quantize(model, calibration, folder / "quantized")}
    train = shapes.make(shapes.TARGET, samples, seed=seed)
    test = shapes.make(shapes.TARGET, test_samples, seed=seed + 1)
    # fork: the workers run only the C trainers and need not import torch again
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(run_scheme, scheme, models, train, test, epochs, folder / f"scheme{k}")
                   for k, scheme in enumerate(schemes)]
        for future in concurrent.futures.as_completed(futures):
            row = future.result()
            print(f"{row['scheme']}: {row['accuracy']:.1%} ({row['seconds']:.0f} s)", file=sys.stderr, flush=True)
    return [future.result() for future in futures]


def table(rows: list[dict]) -> str:
    """The markdown table; the scheme --auto-sparse chose follows it."""
    lines = ["| scheme | RAM (arena + trained params + optimizer state) | learning rate | held-out accuracy |",
             "|---|---|---|---|"]
    lines += [f"| {r['scheme']} | {r['ram']:,} B | {r['lr']:g} | {r['accuracy']:.1%} |" for r in rows]
    lines += [f"\n--auto-sparse chose: {r['chosen']['options']} ({r['chosen']['proxy']})" for r in rows if r["chosen"]]
    return "\n".join(lines)


def goals(rows: list[dict]) -> list[str]:
    """The issue's goals the rows miss (empty: all met): the task makes float32 last-layer
    fine-tuning at least GAP_LAST_LAYER points worse than full fine-tuning, and the budgeted sparse
    int8 update (the last scheme) fits BUDGET, beats the quantized model's last-layer fine-tuning and
    comes within GAP_SPARSE points of full fine-tuning."""
    by = {r["scheme"]: r for r in rows}
    full, last, int8_last, budgeted = (by[SCHEMES[k].name]["accuracy"] * 100 for k in (0, 1, 2, -1))
    ram = by[SCHEMES[-1].name]["ram"]
    missed = [] if full - last >= GAP_LAST_LAYER else [f"last layer only {full - last:.1f} points below full"]
    if ram > BUDGET or budgeted <= int8_last or full - budgeted > GAP_SPARSE:
        missed.append(f"the budgeted sparse int8 update ({ram:,} B, {budgeted:.1f}%) is not within {BUDGET:,} B, "
                      f"above last-layer ({int8_last:.1f}%) and within {GAP_SPARSE} points of full ({full:.1f}%)")
    return missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain", type=int, default=16000, help="source-domain images to pretrain on")
    parser.add_argument("--pretrain-epochs", type=int, default=16)
    parser.add_argument("--samples", type=int, default=1000, help="target-domain images to fine-tune on")
    parser.add_argument("--test", type=int, default=2000, help="held-out target-domain images")
    parser.add_argument("--epochs", type=int, default=20, help="fine-tuning epochs")
    parser.add_argument("--jobs", type=int, default=2, help="schemes fine-tuned at once (one process each)")
    parser.add_argument("--seed", type=int, default=1, help="draws the target images (pretraining stays the same)")
    parser.add_argument("--keep", type=Path, help="folder for the models and build folders (default: temporary)")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="sparse-accuracy-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows = study(folder, args.pretrain, args.samples, args.test, args.pretrain_epochs, args.epochs,
                 jobs=args.jobs, seed=args.seed)
    print(f"{args.samples} target images to fine-tune on ({args.epochs} epochs; {VALIDATION:.0%} of them choose the "
          f"learning rate), {args.test} held out")
    print(table(rows))
    missed = goals(rows)
    print("goals: " + ("; ".join(missed) if missed else "met"))
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
