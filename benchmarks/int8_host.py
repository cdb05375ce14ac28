"""Host speed of the int8 forward: the vector kernels (MT_SIMD=1, runtime_c/kernels/dot_s8_vec.h)
against the scalar ones microcontrollers run (MT_SIMD=0), in one run on the same build folders.

The models of benchmarks/int8_fit.py (MobileNetV2-0.35 at 96x96x3, the DS-CNN keyword spotter),
quantized by quantize_static, built with --train-bias-last 1 at batch 1: the whole forward is
int8 (QLinearConv, QLinearAdd, QLinearGlobalAveragePool, QGemm). CPU time of this process per
predict() call (best of several repeats: steadier than wall time on a shared machine), the ratio,
and a check that both give the same outputs (integer math is exact: tests/test_int8_exact.py proves
it against a numpy model).

    python -m benchmarks.int8_host
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

import codegen
from benchmarks.int8_fit import MODELS

KERNELS = {"vector (MT_SIMD=1)": None, "scalar (MT_SIMD=0)": ["-DMT_SIMD=0"]}


def seconds_per_call(fn, calls: int = 20, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - start) / calls)
    return best


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="int8-host-"))
    ok = True
    print("| model | kernels | ms per forward | speed-up |\n|---|---|---|---|")
    for model in MODELS:
        build = folder / model.name
        codegen.generate(model.quantize(model.export(folder)), build, loss="cross_entropy", batch=1,
                         train_bias_last=1)
        x = np.random.default_rng(0).standard_normal((1, *model.sample)).astype(np.float32)
        trainers = {name: codegen.load_host(build, flags) for name, flags in KERNELS.items()}
        times = {name: seconds_per_call(lambda t=t: t.predict(x)) for name, t in trainers.items()}
        outputs = [t.predict(x) for t in trainers.values()]
        ok = ok and all(np.array_equal(outputs[0], o) for o in outputs)
        scalar = times["scalar (MT_SIMD=0)"]
        for name, s in times.items():
            print(f"| {model.name} | {name} | {s * 1e3:.2f} | {scalar / s:.1f}x |")
    print("outputs equal" if ok else "OUTPUTS DIFFER")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
