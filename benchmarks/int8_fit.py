"""Do int8 backbones fit microcontrollers? (issue 14's "Fit" proof.) Two standard tinyML models,
quantized with onnxruntime's quantize_static (QDQ, int8 per-channel weights, int8 activations,
random calibration data: only the memory is measured), compiled for personalization (batch 1,
the head plus the last 4 biases, plain SGD, no federated copy), next to the same selection
on the float32 model:

- MobileNetV2, width 0.35, 96x96x3, 10 classes (torchvision's layout: channels rounded to
  multiples of 8, BatchNorm folded into the convolutions by the exporter); goal: nrf52840
  (256 KB RAM including the stack reserve, 1 MB flash);
- DS-CNN keyword spotter on 49x10 MFCC (conv 64 10x4 stride 2, 4 depthwise-separable blocks,
  global average, 12 classes); goal: <= 64 KB RAM.

    python -m benchmarks.int8_fit [--qemu]   # the table; --qemu also builds the MobileNetV2
                                             # for nrf52840 and runs a training step under QEMU
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import codegen  # noqa: E402
from codegen import firmware, qemu, targets  # noqa: E402
from codegen.errors import FitError  # noqa: E402

SELECTION = dict(train_last=1, train_bias_last=4)
TARGET = "nrf52840"
KWS_RAM = 64 * 1024


def _divisible(v: float, divisor: int = 8) -> int:
    """torchvision's _make_divisible: the nearest multiple of 8, never 10% below `v`."""
    rounded = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * v else rounded


def _conv_bn(cin: int, cout: int, kernel, stride=1, groups: int = 1, act: type | None = nn.ReLU6,
             padding=None) -> list[nn.Module]:
    padding = kernel // 2 if padding is None else padding
    layers = [nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + ([act()] if act else [])


class InvertedResidual(nn.Module):
    """torchvision's block: 1x1 expand (unless t = 1), 3x3 depthwise, 1x1 linear project, skip
    when stride 1 and the channels match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        layers = _conv_bn(cin, mid, 1) if expand != 1 else []
        layers += _conv_bn(mid, mid, 3, stride, groups=mid) + _conv_bn(mid, cout, 1, act=None)
        self.body = nn.Sequential(*layers)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.skip else self.body(x)


def mobilenet_v2(width: float = 0.35, classes: int = 10) -> nn.Module:
    """torchvision.models.mobilenet_v2(width_mult=width, num_classes=classes), eval-mode layout."""
    cin = _divisible(32 * width)
    layers = _conv_bn(3, cin, 3, 2)
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]:
        cout = _divisible(c * width)
        for k in range(n):
            layers.append(InvertedResidual(cin, cout, s if k == 0 else 1, t))
            cin = cout
    last = _divisible(1280 * max(1.0, width))
    return nn.Sequential(*layers, *_conv_bn(cin, last, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(last, classes))


def ds_cnn(channels: int = 64, classes: int = 12) -> nn.Module:
    """The DS-CNN keyword spotter (Hello Edge): conv 10x4 stride 2 ('same' padding: 25x5), 4 x
    (depthwise 3x3, pointwise), each with BatchNorm and ReLU, global average, linear."""
    layers = _conv_bn(1, channels, (10, 4), 2, act=nn.ReLU, padding=(5, 1))
    for _ in range(4):
        layers += _conv_bn(channels, channels, 3, groups=channels, act=nn.ReLU)
        layers += _conv_bn(channels, channels, 1, act=nn.ReLU)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes))


def _trained(model: nn.Module) -> nn.Module:
    """`model` in eval mode with BatchNorm statistics and affine parameters drawn at random, as
    a trained model has. With the defaults every folded bias is zero and the exporter shares equal
    ones between layers (an Identity of another layer's bias), on which the int8 lowering
    fails today."""
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0, 0.1)
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
    return model.eval()


@dataclass(frozen=True)
class Model:
    name: str
    build: Callable[[], nn.Module]
    sample: tuple[int, ...]

    def export(self, folder: Path) -> Path:
        """Float ONNX at batch 1, BatchNorm folded into the convolutions (the exporter's eval mode)."""
        torch.manual_seed(0)
        path = folder / f"{self.name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(_trained(self.build()), (torch.zeros(1, *self.sample),), str(path), input_names=["x"],
                              output_names=["y"], opset_version=18, dynamo=False)
        return path

    def quantize(self, path: Path) -> Path:
        """quantize_static QDQ, per-channel int8 weights, int8 activations, 8 random samples."""
        from onnxruntime import quantization as ortq

        class Reader(ortq.CalibrationDataReader):
            def __init__(self, shape):
                rng = np.random.default_rng(0)
                self.samples = iter([{"x": rng.standard_normal((1, *shape)).astype(np.float32)} for _ in range(8)])

            def get_next(self):
                return next(self.samples, None)

        out = path.with_name(f"{self.name}_int8.onnx")
        ortq.quantize_static(str(path), str(out), Reader(self.sample), quant_format=ortq.QuantFormat.QDQ,
                             per_channel=True, activation_type=ortq.QuantType.QInt8,
                             weight_type=ortq.QuantType.QInt8)
        return out


MODELS = [Model("mobilenetv2_0.35", mobilenet_v2, (3, 96, 96)), Model("ds_cnn", ds_cnn, (1, 49, 10))]


def generate(onnx_path: Path, out: Path) -> dict:
    """The summary's memory of a personalization trainer (SELECTION, batch 1)."""
    return codegen.generate(onnx_path, out, loss="cross_entropy", batch=1, federated=False, **SELECTION)["memory"]


def figures(folder: Path) -> dict[str, dict[str, dict]]:
    """{model: {"float32" | "int8": the summary's memory}}; the int8 build folders stay in `folder`."""
    result = {}
    for model in MODELS:
        path = model.export(folder)
        result[model.name] = {"float32": generate(path, folder / f"{model.name}_float32"),
                              "int8": generate(model.quantize(path), folder / f"{model.name}_int8")}
    return result


def ram(memory: dict) -> int:
    """What training takes in RAM: arena + trainable parameters + optimizer state."""
    return memory["arena_bytes"] + memory["param_bytes"] + memory["optimizer_state_bytes"]


def table(result: dict[str, dict[str, dict]]) -> str:
    lines = ["| model | weights | arena B | params + optimizer state B | RAM total B | frozen weights B | constants B |",
             "|---|---|---|---|---|---|---|"]
    for name, kinds in result.items():
        for kind, m in kinds.items():
            lines.append(f"| {name} | {kind} | {m['arena_bytes']:,} | {m['param_bytes'] + m['optimizer_state_bytes']:,} "
                         f"| {ram(m):,} | {m['frozen_bytes']:,} | {m['const_bytes']:,} |")
    return "\n".join(lines)


def run_on_board(folder: Path, sample: tuple[int, ...], timeout: float = 600) -> tuple[dict, qemu.RunResult]:
    """Build the int8 trainer in `folder` for TARGET with one random sample (one training step) and
    run it under QEMU: (the firmware's size report, the run)."""
    rng = np.random.default_rng(0)
    info = firmware.build(folder, TARGET, rng.standard_normal((1, *sample)).astype(np.float32),
                          np.zeros(1, np.int64), epochs=1, samples=1)
    return info["size"], qemu.run(folder, TARGET, timeout=timeout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qemu", action="store_true", help=f"also build the MobileNetV2 for {TARGET} and run it")
    parser.add_argument("--keep", type=Path, help="folder for the models and build folders (default: temporary)")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="int8-fit-"))
    folder.mkdir(parents=True, exist_ok=True)
    result = figures(folder)
    print(table(result))
    limit = targets.load(TARGET).memory
    mobilenet, kws = result[MODELS[0].name]["int8"], result[MODELS[1].name]["int8"]
    ok = ram(kws) <= KWS_RAM and ram(mobilenet) + limit.stack <= limit.ram \
        and mobilenet["frozen_bytes"] + mobilenet["const_bytes"] <= limit.flash
    if args.qemu:
        try:
            size, run = run_on_board(folder / f"{MODELS[0].name}_int8", MODELS[0].sample)
        except FitError as e:
            print(e)
            return 1
        print(f"{TARGET}: RAM {size['ram']:,} B of {limit.ram:,}, flash {size['flash']:,} B of {limit.flash:,}; "
              f"QEMU exit {run.code}, {run.work or run.note}")
        ok = ok and run.code == 0 and size["ram"] <= limit.ram and size["flash"] <= limit.flash
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
