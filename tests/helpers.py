"""Shared test helpers: build small ONNX models, compile them, and compare with PyTorch."""
from __future__ import annotations

import platform
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import codegen
from codegen.build import host_cflags


def onnx_model(nodes, inputs: dict, outputs: dict, inits: dict, opset: int = 18,
               path: Path | None = None) -> onnx.ModelProto:
    """A float32 model from onnx.helper parts; inputs/outputs map name -> shape."""
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if path is not None:
        onnx.save(model, str(path))
    return model


# The two kernel implementations (runtime_c/mt_common.h, MT_SIMD) as extra C flags: the vector
# tiles with this host's instruction set (AVX2 where the CPU has it, as host builds use them); the
# scalar rows that microcontrollers run, built here on the host too; on x86-64 also the vector
# tiles without AVX2 (SSE2: the fallback loads).
KERNELS = {"simd": [f for f in host_cflags() if f.startswith("-march")], "scalar": ["-DMT_SIMD=0"],
           **({"sse2": ["-march=x86-64"]} if platform.machine().lower() in ("x86_64", "amd64") else {})}


# What the generated C must compile under, warnings as errors (the project's standard).
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wvla", "-O2", "-ffp-contract=off"]


def compile_model(model_path, out_dir, cflags=None, **options) -> codegen.HostTrainer:
    codegen.generate(model_path, out_dir, **options)
    return codegen.load_host(out_dir, cflags)


def export_torch(module, example, path, dynamo: bool, batch_dynamic: bool = False, keep_bn: bool = False):
    """Export with either of torch.onnx's exporters (eval mode, fixed or dynamic batch). Both fold
    eval-mode BatchNorm into the Conv before it; keep_bn (legacy exporter only) keeps it."""
    import torch

    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            shapes = ({0: torch.export.Dim("batch")},) if batch_dynamic else None
            torch.onnx.export(module, (example,), str(path), dynamo=True, dynamic_shapes=shapes,
                              verbose=False)
        else:
            axes = {"x": {0: "batch"}} if batch_dynamic else None
            mode = torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL
            torch.onnx.export(module, (example,), str(path), dynamo=False, input_names=["x"],
                              dynamic_axes=axes, opset_version=17, training=mode)
    return path


def classify_alongside(trainer, model, opt, shape, classes: int, steps: int, seed: int) -> float:
    """`steps` random batches of `shape` with class labels, one cross-entropy step each of PyTorch
    (model, opt) and of the trainer; every loss within 1e-5 relative of PyTorch's (float32).
    Returns the largest relative difference."""
    import pytest
    import torch

    rng = np.random.default_rng(seed)
    worst = 0.0
    for step in range(steps):
        x = rng.normal(size=shape).astype(np.float32)
        y = rng.integers(0, classes, size=shape[0])
        ref = torch.nn.functional.cross_entropy(model(torch.tensor(x)), torch.tensor(y))
        opt.zero_grad()
        ref.backward()
        opt.step()
        ours = trainer.train_step(x, y)
        worst = max(worst, abs(ours - ref.item()) / abs(ref.item()))
        assert ours == pytest.approx(ref.item(), rel=1e-5), f"step {step}"
    return worst
