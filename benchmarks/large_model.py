"""A large model end to end: a ResNet-18-like network (11.2M parameters, BatchNorm kept, written
with onnx.helper: no torchvision) through `generate` and the cffi host build. Reports the seconds
of each and the compiler's peak memory (the largest resident set among the build's processes).

    python -m benchmarks.large_model [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import codegen

ROOT = Path(__file__).resolve().parent.parent
STAGES = [(64, 1), (128, 2), (256, 2), (512, 2)]  # ResNet-18: channels and first stride per stage


class _Builder:
    """Nodes and initializers of the network being written (He-initialised, fixed seed)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []

    def _init(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def conv_bn(self, x: str, name: str, cin: int, cout: int, k: int, stride: int, relu: bool) -> str:
        w = self.rng.normal(0, np.sqrt(2 / (cin * k * k)), (cout, cin, k, k))
        self.nodes.append(helper.make_node("Conv", [x, self._init(f"{name}.weight", w)], [f"{name}.conv"],
                                           kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4))
        bn = [self._init(f"{name}.bn.{p}", v) for p, v in (
            ("scale", self.rng.uniform(0.5, 1.5, cout)), ("bias", self.rng.normal(0, 0.1, cout)),
            ("mean", self.rng.normal(0, 0.1, cout)), ("var", self.rng.uniform(0.5, 1.5, cout)))]
        self.nodes.append(helper.make_node("BatchNormalization", [f"{name}.conv", *bn], [f"{name}.bn"]))
        return self.relu(f"{name}.bn", name) if relu else f"{name}.bn"

    def relu(self, x: str, name: str) -> str:
        self.nodes.append(helper.make_node("Relu", [x], [f"{name}.relu"]))
        return f"{name}.relu"

    def block(self, x: str, name: str, cin: int, cout: int, stride: int) -> str:
        """ResNet's basic block: two 3x3 convolutions, a 1x1 projection on the skip if the shape changes."""
        y = self.conv_bn(x, f"{name}.a", cin, cout, 3, stride, relu=True)
        y = self.conv_bn(y, f"{name}.b", cout, cout, 3, 1, relu=False)
        skip = x if stride == 1 and cin == cout else self.conv_bn(x, f"{name}.down", cin, cout, 1, stride, False)
        self.nodes.append(helper.make_node("Add", [y, skip], [f"{name}.sum"]))
        return self.relu(f"{name}.sum", name)


def resnet18(path: Path, classes: int = 10, size: int = 32, batch: int = 1, seed: int = 0) -> Path:
    """ResNet-18 (BasicBlock x [2, 2, 2, 2]) on 3 x size x size images; 11.2M parameters at 10 classes."""
    b = _Builder(seed)
    x = b.conv_bn("x", "stem", 3, 64, 7, 2, relu=True)
    b.nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    x, cin = "pool", 64
    for s, (cout, stride) in enumerate(STAGES):
        for i in range(2):
            x = b.block(x, f"layer{s + 1}.{i}", cin, cout, stride if i == 0 else 1)
            cin = cout
    fc_w = b._init("fc.weight", b.rng.normal(0, np.sqrt(1 / cin), (classes, cin)))
    b.nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"]),
                helper.make_node("Gemm", ["flat", fc_w, b._init("fc.bias", np.zeros(classes))], ["y"], transB=1)]
    graph = helper.make_graph(b.nodes, "resnet18", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, classes])], b.inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


BUILD = "import sys; from codegen.build import build_host; build_host(sys.argv[1])"


def host_build(folder: Path) -> dict:
    """build_host in a fresh process (MCUTRAIN_CACHE must name an empty cache, so the compiler
    really runs): wall and CPU seconds, and the largest resident set among its processes."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", BUILD, str(folder)], check=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"host_build_s": round(wall, 1), "host_build_cpu_s": round(cpu, 1),
            "compiler_peak_mib": round(after.ru_maxrss / 1024)}


def _mib(paths) -> float:
    return round(sum(p.stat().st_size for p in paths) / 2**20, 1)


def measure(work: Path) -> dict:
    """Generate and build the ResNet-18; check that the trainer starts from the model's weights."""
    model = resnet18(work / "resnet18.onnx")
    folder = work / "build"
    t0 = time.perf_counter()
    codegen.generate(model, folder, loss="cross_entropy", name="resnet")
    result = {"generate_s": round(time.perf_counter() - t0, 1)}
    os.environ["MCUTRAIN_CACHE"] = str(work / "cache")
    shutil.rmtree(work / "cache", ignore_errors=True)
    result.update(host_build(folder))
    params = codegen.load_host(folder).get_params()
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(model)).graph.initializer}
    return {"parameters": sum(v.size for v in params.values()), **result,
            "c_source_mib": _mib(folder.glob("*.c")), "data_files_mib": _mib([*folder.glob("*.bin"), *folder.glob("*.inc")]),
            "params_bit_exact": all(v.tobytes() == inits[n].tobytes() for n, v in params.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(json.dumps(measure(work), indent=1))


if __name__ == "__main__":
    main()
