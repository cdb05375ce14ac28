"""The ONNX model-zoo light graphs (onnx/backend/test/data/light/ of the onnx 1.17 wheel: AlexNet,
DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512 with their
weights made by ConstantOfShape) through `inspect` and the C forward, against the reference output
onnx ships (computed for the input arange(n) / n, as onnx's backend test runner feeds them).
Their weights are constant per tensor (the output is a uniform softmax), so the forward checks
loading, shapes and the plan more than arithmetic. Prints CPU seconds per stage (the machine is
shared: wall seconds vary with its load).

    python -m benchmarks.model_zoo [MODEL ...] [--no-forward]

tests/test_model_zoo.py runs the cheap part of this in CI.
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

import codegen

MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
          "squeezenet", "vgg19", "zfnet512")
# The scalar (microcontroller) kernels at -O1: the forward of a light graph builds about ten times
# faster than with the host's -O3 vector tiles, each inlined at its call site.
CFLAGS = ["-O1", "-DMT_SIMD=0"]
RTOL, ATOL = 1e-4, 1e-7  # onnx's own test uses rtol 1e-3 (2e-3 for DenseNet-121), atol 1e-7


def cpu() -> float:
    """CPU seconds of this process and its finished children (the C compiler)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def sample(model: Path) -> np.ndarray:
    """The input the reference output was computed for: arange(n) / n in the input's shape."""
    graph = onnx.load(str(model)).graph
    inits = {i.name for i in graph.initializer}  # listed as inputs too (IR version 3)
    (shape,) = [[d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input if i.name not in inits]
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


def reference(model: Path) -> np.ndarray:
    return numpy_helper.to_array(onnx.load_tensor(str(model.with_name(f"{model.stem}_output_0.pb"))))


def forward(model: Path, out_dir: Path) -> tuple[codegen.HostTrainer, np.ndarray, dict[str, float]]:
    """The trainer of `model` built in `out_dir`, its C forward (predict) of sample(model), and
    the CPU seconds of each stage."""
    start = cpu()
    codegen.generate(model, out_dir, loss="mse")
    generated = cpu()
    trainer = codegen.load_host(out_dir, CFLAGS)
    built = cpu()
    y = trainer.predict(sample(model))
    return trainer, y, {"generate": generated - start, "build": built - generated, "predict": cpu() - built}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", metavar="MODEL", help=f"some of {', '.join(MODELS)} (default: all)")
    parser.add_argument("--no-forward", action="store_true", help="inspect only")
    args = parser.parse_args()
    unknown = set(args.models) - set(MODELS)
    if unknown:
        parser.error(f"unknown models: {', '.join(sorted(unknown))}")
    from tests.onnx_node_data import light_data  # the data lives with the tests (their cache)

    folder = light_data()
    print("| model | parameters | arena, full training | inspect CPU s | generate | build | predict | max error |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MCUTRAIN_CACHE"] = tmp  # an empty build cache: every build really compiles
        for name in args.models or MODELS:
            print("| " + " | ".join(_row(folder / f"light_{name}.onnx", Path(tmp) / name, args.no_forward)) + " |",
                  flush=True)


def _row(model: Path, out_dir: Path, no_forward: bool) -> list[str]:
    start = cpu()
    report = codegen.inspect(model)
    seconds = cpu() - start
    params = sum(int(np.prod(p["shape"])) for p in report.params)
    row = [model.stem.removeprefix("light_"), f"{params:,}",
           f"{report.memory_by_choice[0].memory['arena_bytes']:,} B", f"{seconds:.1f}"]
    if no_forward:
        return row
    _, y, stages = forward(model, out_dir)
    ref = reference(model)
    mismatch = "" if np.allclose(y, ref, rtol=RTOL, atol=ATOL) else " MISMATCH"
    return [*row, *(f"{stages[k]:.1f}" for k in ("generate", "build", "predict")),
            f"{np.abs(y - ref).max():.1e}{mismatch}"]


if __name__ == "__main__":
    main()
