"""The generated C itself: strict C99 under gcc and clang, no allocation/VLAs/recursion, and a
standalone run under AddressSanitizer + UndefinedBehaviorSanitizer."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from benchmarks.mcu import callgraph, reachable
from helpers import KERNELS, STRICT, compile_model, export_torch



@pytest.fixture(scope="module")
def build(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("c")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8),
                                torch.nn.Sigmoid(), torch.nn.Linear(8, 3), torch.nn.LogSoftmax(dim=1))
    path = export_torch(model, torch.zeros(4, 12), tmp / "net.onnx", dynamo=True)
    compile_model(path, tmp / "build", loss="mse", lr=0.1, momentum=0.9)
    return tmp / "build"


@pytest.mark.parametrize("kernels", sorted(KERNELS))
@pytest.mark.parametrize("which", ["build", "lenet"], ids=["mlp", "lenet"])
@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_compiles_strictly(request, cc, which, kernels):
    if not shutil.which(cc):
        pytest.skip(f"{cc} not installed (CI installs it)")
    build = request.getfixturevalue(which)
    subprocess.run([cc, *STRICT, *KERNELS[kernels], "-c", "net.c", "-o", f"net_{cc}_{kernels}.o"], cwd=build,
                   check=True)


def test_no_allocation_no_vla(build):
    sources = [p for p in build.rglob("*") if p.suffix in (".c", ".h")]
    for src in sources:
        text = src.read_text()
        assert not re.search(r"\b(malloc|calloc|realloc|free|alloca)\s*\(", text), src


def test_no_recursion(build):
    """No function calls itself, directly or through others (call graph from the object file)."""
    subprocess.run(["gcc", "-std=c99", "-O0", "-fcallgraph-info", "-c", "net.c", "-o", "cg.o"],
                   cwd=build, check=True)
    _, edges = callgraph((build / "cg.ci").read_text())
    assert edges, "no call graph found"
    assert not [f for f, callees in edges.items() if any(f in reachable(edges, g) for g in callees)]


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    """A small LeNet with Conv (padded, strided), MaxPool and AveragePool, cross-entropy."""
    tmp = tmp_path_factory.mktemp("lenet")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                torch.nn.Conv2d(4, 6, 3, stride=2, padding=1), torch.nn.ReLU(),
                                torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(24, 3))
    path = export_torch(model, torch.zeros(2, 1, 16, 16), tmp / "net.onnx", dynamo=True)
    compile_model(path, tmp / "build", loss="cross_entropy", lr=0.1, momentum=0.9)
    return tmp / "build"


HARNESS = r"""
#include <stdio.h>
#include "net.h"
int main(void) {
    static float x[NET_INPUT_SIZE], out[NET_OUTPUT_SIZE], params[NET_PARAMS_SIZE];
    static net_label_t y[NET_LABEL_SIZE];
    int i, step;
    float loss = 0.0f;
    for (i = 0; i < NET_INPUT_SIZE; ++i) x[i] = (float)((i * 37) % 11) / 11.0f - 0.5f;
    for (i = 0; i < NET_LABEL_SIZE; ++i) y[i] = (net_label_t)(LABEL);
    for (step = 0; step < 20; ++step) loss = net_train_step(x, y);
    net_predict(x, out);
    net_get_params(params);
    for (i = 0; i < NET_PARAMS_SIZE; i += 5) { /* the slices are the blob, the last one cut short */
        static float part[5];
        uint32_t k, n = net_get_params_slice(part, (uint32_t)i, 5u);
        if (n != (uint32_t)(NET_PARAMS_SIZE - i < 5 ? NET_PARAMS_SIZE - i : 5)) return 2;
        for (k = 0; k < n; ++k)
            if (part[k] != params[i + (int)k]) return 3;
    }
    if (net_get_params_slice(out, NET_PARAMS_SIZE + 1u, 1u) != 0u) return 4;
    net_set_params(params);
    printf("%.6f %.6f\n", loss, out[0]);
    return loss < 0.0f;
}
"""


@pytest.mark.parametrize("kernels", sorted(KERNELS))
@pytest.mark.parametrize("which, label", [("build", "(float)(i % 3) / 3.0f"), ("lenet", "i % 3")],
                         ids=["mlp", "lenet"])
def test_sanitizers(request, which, label, kernels):
    """ASan + UBSan over 20 training steps, predict, the parameter blob round trip and its slices."""
    build = request.getfixturevalue(which)
    (build / "main.c").write_text(HARNESS)
    flags = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g", "-O1", f"-DLABEL={label}"]
    exe = f"san_{kernels}"
    subprocess.run(["gcc", *STRICT, *KERNELS[kernels], *flags, "main.c", "net.c", "-lm", "-o", exe], cwd=build,
                   check=True)
    run = subprocess.run([f"./{exe}"], cwd=build, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    loss, out0 = map(float, run.stdout.split())
    assert np.isfinite(loss) and np.isfinite(out0)
