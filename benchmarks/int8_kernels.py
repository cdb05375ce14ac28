"""Instructions per multiply-accumulate of the int8 convolution kernel (`mt_conv_s8`, QLinearConv)
on a board, counted under QEMU like `benchmarks/mcu.py` counts a training step.

    python -m benchmarks.int8_kernels [--target cortex-m4f]

Each shape is a model x -> QuantizeLinear -> QLinearConv -> MaxPool (whole plane, int8) ->
DequantizeLinear -> + p (p: the float parameter a trainer needs), and a baseline without the
QLinearConv (its input has the convolution's output shape): the difference of their instructions
per training step is the convolution's (its forward; no gradient flows into the frozen layer).
Per-channel weight scales, a non-zero input zero point, int32 bias. The physical limit of a core
with the DSP extension is 0.5 instructions per MAC (SMLAD: two 16-bit MACs)."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import codegen
from benchmarks import mcu
from codegen.manifest import read as read_manifest

SHAPES = {  # name: (channels in, channels out, plane, kernel, group, pads)
    "pointwise 1x1, 64 -> 64, 24x24": (64, 64, 24, 1, 1, 0),
    "depthwise 3x3, 64, 24x24, stride 1, pad 1": (64, 64, 24, 3, 64, 1),
}
LIMIT = 0.5  # instructions per MAC: 2 MACs per SMLAD


def model(path: Path, c: int, m: int, size: int, k: int, group: int, pad: int, conv: bool) -> None:
    rng = np.random.default_rng(0)
    inits = {"x_scale": np.float32(0.05), "x_zp": np.int8(-3), "y_scale": np.float32(0.5), "y_zp": np.int8(2),
             "p": np.zeros((1, m, 1, 1), np.float32)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"])]
    pooled = "xq"
    if conv:
        inits |= {"w": rng.integers(-127, 128, (m, c // group, k, k)).astype(np.int8),
                  "w_scale": rng.uniform(0.005, 0.02, m).astype(np.float32), "w_zp": np.zeros(m, np.int8),
                  "b": rng.integers(-3000, 3000, m).astype(np.int32)}
        nodes.append(helper.make_node("QLinearConv", ["xq", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale",
                                                      "y_zp", "b"], ["yq"], group=group, pads=[pad] * 4))
        pooled = "yq"
    out = size + 2 * pad - k + 1
    nodes += [helper.make_node("MaxPool", [pooled], ["pq"], kernel_shape=[out, out]),
              helper.make_node("DequantizeLinear", ["pq", "y_scale" if conv else "x_scale", "y_zp" if conv else "x_zp"],
                               ["pf"]),
              helper.make_node("Add", ["pf", "p"], ["y"])]
    x_shape = [1, c, size, size] if conv else [1, m, out, out]
    graph = helper.make_graph(nodes, "conv" if conv else "base",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, m, 1, 1])],
                              [numpy_helper.from_array(np.asarray(v), n) for n, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(path))


def step_instructions(tmp: Path, name: str, target: str, **shape) -> float:
    model(tmp / f"{name}.onnx", **shape)
    codegen.generate(tmp / f"{name}.onnx", tmp / name, loss="mse", lr=0.01)
    m = read_manifest(tmp / name)
    result = mcu.measure(tmp / name, m, target, steps=1)
    if result is None or result.insns_per_step is None:
        raise RuntimeError(f"no instruction count for {name} on {target}")
    return result.insns_per_step


def measure(target: str = "cortex-m4f") -> list[tuple[str, int, float]]:
    """(shape, MACs, instructions of the convolution) per shape."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (shape, (c, m, size, k, group, pad)) in enumerate(SHAPES.items()):
            args = dict(c=c, m=m, size=size, k=k, group=group, pad=pad)
            conv = step_instructions(Path(tmp), f"conv{i}", target, conv=True, **args)
            base = step_instructions(Path(tmp), f"base{i}", target, conv=False, **args)
            rows.append((shape, m * (c // group) * k * k * size * size, conv - base))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="cortex-m4f")
    target = parser.parse_args().target
    print(f"| shape ({target}) | MACs | instructions | instructions/MAC | limit (2 MACs per SMLAD) |")
    print("|---|---|---|---|---|")
    for shape, macs, insns in measure(target):
        print(f"| {shape} | {macs:,} | {insns:,.0f} | {insns / macs:.2f} | {LIMIT:.2f} |")


if __name__ == "__main__":
    main()
