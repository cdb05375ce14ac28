"""What sparse updates cost on a Cortex-M7 (issue 18's benchmark): instructions per training step
under QEMU (cortex-m7f, the STM32F746 class TTE measured on), RAM and flash of the int8
MobileNetV2-0.35 at 96x96 (benchmarks/int8_fit.py: onnxruntime's quantize_static, per-channel
int8 weights; batch 1, plain SGD, no federated copy) for each update scheme, next to full training
of every layer (the memory plan only: it does not fit the board).

    python -m benchmarks.sparse_mcu [--keep DIR]     # one markdown table (a few minutes)

RAM is the ELF's static RAM (arena + trained parameters + optimizer state + the target's 8 KiB
stack reserve), or the memory plan's arena + parameters + state + 8 KiB where the scheme does not
fit; flash is the ELF's without the embedded data set (one sample)."""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import codegen  # noqa: E402
from benchmarks import int8_fit  # noqa: E402
from benchmarks.sparse_accuracy import name_convs  # noqa: E402
from codegen import budget, firmware, qemu, targets  # noqa: E402
from codegen.errors import FitError  # noqa: E402

TARGET = "cortex-m7f"
BUDGET = 256 * 1024
MODEL = int8_fit.MODELS[0]  # MobileNetV2-0.35, 96x96x3, 10 classes
# torchvision's layout numbered by nn.Sequential: 3..19 are the inverted residual blocks, 20 the
# final 1x1 conv (112 -> 1280 channels), 25 the classifier. The blocks' first (expanding) pointwise
# convs are the layers TTE's contribution analysis ranks first.
BIASES = dict(train_last=1, train_bias_last=8)
CHANNELS = ["18.body.0.weight:0.25", "19.body.0.weight:0.25"]
SCHEMES = {
    "full update (every layer, float)": dict(),
    "last layer": dict(train_last=1),
    "head + biases of the last 8 layers": BIASES,
    "sparse, float update: + 1/4 of the channels of the last 2 expand convs": dict(BIASES, train_channels=CHANNELS),
    "sparse, int8 update (QAS): the same": dict(BIASES, train_channels=CHANNELS, update="int8"),
    f"--auto-sparse --ram-budget {BUDGET}, int8 update": dict(ram_budget=BUDGET, auto_sparse=True, update="int8"),
}
DATA_PARTS = ("data set: samples", "data set: labels")


def model(folder: Path) -> Path:
    """The quantized model, its convolutions named after their PyTorch modules."""
    return MODEL.quantize(name_convs(MODEL.export(folder), MODEL.build()))


def measure(onnx_path: Path, name: str, options: dict, folder: Path) -> dict:
    """Generate the scheme; build and run one training step under QEMU when it fits the target."""
    summary = codegen.generate(onnx_path, folder, loss="cross_entropy", batch=1, federated=False, **options)
    target = targets.load(TARGET)
    row = {"scheme": name, "ram": budget.ram_bytes(summary["memory"]) + target.memory.stack, "flash": None,
           "insns": None, "trained": summary["memory"]["param_bytes"],
           "chosen": summary["auto_sparse"]["options"] if "auto_sparse" in summary else None}
    rng = np.random.default_rng(0)
    try:
        info = firmware.build(folder, TARGET, rng.standard_normal((1, *MODEL.sample)).astype(np.float32),
                              np.zeros(1, np.int64), epochs=1, samples=1)
    except FitError:
        return row
    run = qemu.run(folder, TARGET, timeout=1200)
    if run.code:
        raise RuntimeError(f"{name}: the firmware exited with {run.code}:\n{run.output[-2000:]}")
    size = info["size"]
    data = sum(p["bytes"] for p in size["parts"] if p["what"] in DATA_PARTS)
    return dict(row, ram=size["ram"], flash=size["flash"] - data, insns=run.work.per_step if run.work else None)


def table(rows: list[dict]) -> str:
    lines = [f"| scheme ({MODEL.name} int8, {TARGET}) | trained parameters B | RAM B | flash B | instructions/step |",
             "|---|---|---|---|---|"]
    for r in rows:
        flash = f"{r['flash']:,}" if r["flash"] is not None else "(does not fit)"
        insns = f"{r['insns']:,.0f}" if r["insns"] is not None else "-"
        lines.append(f"| {r['scheme']} | {r['trained']:,} | {r['ram']:,} | {flash} | {insns} |")
    lines += [f"\n--auto-sparse chose: {r['chosen']}" for r in rows if r["chosen"]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="folder for the models and build folders (default: temporary)")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="sparse-mcu-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = model(folder)
    rows = [measure(path, name, options, folder / f"scheme{k}") for k, (name, options) in enumerate(SCHEMES.items())]
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
