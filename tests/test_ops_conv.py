"""Conv, MaxPool, AveragePool and GlobalAveragePool: forward and gradients in the generated C
against PyTorch (through test_ops.run_case), over strides, pads (asymmetric ones via F.pad),
auto_pad, dilations, groups, ceil_mode and count_include_pad, 1-D and 2-D; plus PyTorch-exported
LeNets, onnxruntime cross-checks of what PyTorch cannot express, and the refusals."""
from __future__ import annotations

import functools

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import helper
from onnx.reference import ReferenceEvaluator

import codegen
import test_ops
from codegen.errors import UnsupportedError
from helpers import KERNELS, compile_model, export_torch, onnx_model
from test_ops import rand, run_case


def explicit_pads(attrs, size, kernel):
    """ONNX pads [begins..., ends...] as the spec defines them for each auto_pad mode."""
    rank, mode = len(size), attrs.get("auto_pad", "NOTSET")
    if mode == "NOTSET":
        return list(attrs.get("pads", [0] * 2 * rank))
    if mode == "VALID":
        return [0] * 2 * rank
    strides, dil = attrs.get("strides", [1] * rank), attrs.get("dilations", [1] * rank)
    total = [max(0, (-(-n // s) - 1) * s + (k - 1) * d + 1 - n) for n, k, s, d in zip(size, kernel, strides, dil)]
    small, large = [t // 2 for t in total], [t - t // 2 for t in total]
    return small + large if mode == "SAME_UPPER" else large + small


def torch_pads(pads):
    """ONNX [b1, b2, e1, e2] -> F.pad's (b_last, e_last, b_first, e_first)."""
    rank = len(pads) // 2
    return [p for i in reversed(range(rank)) for p in (pads[i], pads[rank + i])]


def lift(x):
    """A 1-D (N, C, W) tensor as 2-D (N, C, 1, W)."""
    return x.unsqueeze(2) if x.ndim == 3 else x


def pair(values):
    """1-D kernel/stride/dilation lists as 2-D ones (H = 1)."""
    return [1] * (2 - len(values)) + list(values)


# ---- Conv ----
CONV = {  # x shape, w shape, attributes, bias
    "2d": ((1, 2, 5, 5), (3, 2, 3, 3), {}, False),
    "2d_s2_p1": ((2, 3, 7, 6), (4, 3, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}, True),
    "2d_asym_pads": ((1, 2, 6, 7), (3, 2, 3, 2), {"strides": [2, 1], "pads": [0, 1, 2, 1]}, True),
    "2d_d2": ((1, 2, 7, 7), (2, 2, 3, 3), {"dilations": [2, 2], "pads": [2, 1, 2, 1]}, True),
    "2d_s2_d2": ((1, 1, 9, 8), (2, 1, 3, 3), {"strides": [2, 2], "dilations": [2, 2], "pads": [1, 1, 1, 1]}, False),
    "2d_s3_d2": ((1, 1, 10, 9), (2, 1, 3, 2), {"strides": [3, 2], "dilations": [2, 3]}, True),
    "2d_rect": ((1, 2, 6, 8), (2, 2, 2, 3), {"strides": [1, 2], "dilations": [2, 1], "pads": [1, 0, 0, 2]}, True),
    "2d_group2": ((1, 4, 5, 5), (6, 2, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}, True),
    "2d_depthwise": ((2, 3, 6, 6), (3, 1, 3, 3), {"group": 3, "strides": [2, 2], "pads": [1, 1, 1, 1]}, True),
    "2d_depthwise_x2": ((1, 3, 5, 5), (6, 1, 3, 3), {"group": 3, "kernel_shape": [3, 3]}, False),
    "2d_same_upper": ((1, 2, 6, 7), (2, 2, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, True),
    "2d_same_lower": ((1, 2, 5, 6), (2, 2, 4, 2), {"auto_pad": "SAME_LOWER"}, False),
    "2d_valid": ((1, 2, 7, 6), (2, 2, 3, 3), {"auto_pad": "VALID", "strides": [2, 2]}, True),
    "1d": ((2, 3, 9), (4, 3, 3), {"pads": [1, 1]}, True),
    "1d_asym_d2_group2": ((1, 4, 11), (4, 2, 3), {"strides": [2], "pads": [2, 0], "dilations": [2], "group": 2}, True),
    "1d_same_lower": ((1, 2, 8), (3, 2, 4), {"auto_pad": "SAME_LOWER", "strides": [2]}, True),
    "1d_depthwise": ((1, 3, 7), (3, 1, 3), {"group": 3, "strides": [2]}, False),
}


def conv_ref(attrs, size, kernel):
    rank = len(size)
    pads = explicit_pads(attrs, size, kernel)
    conv = F.conv1d if rank == 1 else F.conv2d

    def ref(x, w, b=None):
        return conv(F.pad(x, torch_pads(pads)), w, b, attrs.get("strides", 1), 0,
                    attrs.get("dilations", 1), attrs.get("group", 1))
    return ref


# Shapes around the kernels' tiles (4 channels x 8 pixels of a row): rows longer than a tile and
# not a multiple of it, channel counts not a multiple of 4, padding and strides across tile edges.
CONV_TILES = {
    "2d_wide": ((2, 3, 13, 21), (6, 3, 3, 3), {"pads": [1, 2, 0, 1]}, True),
    "2d_wide_s2_d2": ((1, 5, 11, 27), (9, 5, 3, 3), {"strides": [2, 2], "dilations": [1, 2], "pads": [2, 1, 2, 1]},
                      True),
    "2d_group2_wide": ((1, 6, 9, 19), (8, 3, 3, 5), {"group": 2, "pads": [1, 2, 1, 2]}, False),
    "2d_depthwise_wide": ((2, 6, 10, 17), (6, 1, 3, 3), {"group": 6, "pads": [1, 1, 1, 1]}, True),
    "2d_depthwise_s2": ((1, 5, 12, 19), (5, 1, 3, 3), {"group": 5, "strides": [2, 2], "pads": [1, 1, 1, 1]}, True),
    "2d_pointwise": ((2, 7, 6, 11), (10, 7, 1, 1), {}, True),
    "1d_long": ((2, 5, 45), (7, 5, 5), {"pads": [2, 2]}, True),
    "1d_long_s3": ((1, 4, 50), (5, 4, 4), {"strides": [3], "pads": [1, 3]}, True),
}


@pytest.mark.parametrize("kernels", ["simd", "scalar"])
@pytest.mark.parametrize("case", CONV)
def test_conv(tmp_path, case, kernels):
    conv_case(tmp_path, *CONV[case], kernels)


@pytest.mark.parametrize("kernels", sorted(KERNELS))
@pytest.mark.parametrize("case", CONV_TILES)
def test_conv_tiles(tmp_path, case, kernels):
    conv_case(tmp_path, *CONV_TILES[case], kernels)


def conv_case(tmp_path, x_shape, w_shape, attrs, bias, kernels):
    operands = [rand(*x_shape), rand(*w_shape)] + ([rand(w_shape[0])] if bias else [])
    run_case(tmp_path, "Conv", operands, conv_ref(attrs, x_shape[2:], w_shape[2:]), attrs, kernels=kernels)


# ---- MaxPool / AveragePool ----
def pool_ref(op, attrs, size):
    """PyTorch's pooling with native (symmetric) padding, or with the pads applied by F.pad first;
    an average over F.unfold windows where torch has no such pooling (dilations)."""
    kernel, rank = attrs["kernel_shape"], len(size)
    pads = explicit_pads(attrs, size, kernel)
    strides, dil = attrs.get("strides", [1] * rank), attrs.get("dilations", [1] * rank)
    symmetric = pads[:rank] == pads[rank:]
    ceil, count_pad = bool(attrs.get("ceil_mode", 0)), bool(attrs.get("count_include_pad", 0))
    assert symmetric or not ceil, "no reference for ceil_mode with asymmetric pads"
    if op == "MaxPool":
        pool = F.max_pool1d if rank == 1 else F.max_pool2d
        if symmetric:
            return lambda x: pool(x, kernel, strides, pads[:rank], dil, ceil_mode=ceil)
        return lambda x: pool(F.pad(x, torch_pads(pads), value=-np.inf), kernel, strides, 0, dil)
    if symmetric and set(dil) == {1}:
        pool = F.avg_pool1d if rank == 1 else F.avg_pool2d
        return lambda x: pool(x, kernel, strides, pads[:rank], ceil, count_pad)
    assert not ceil

    def windowed_mean(x):
        def windows(t, fill):
            cols = F.unfold(F.pad(lift(t), torch_pads(pads if rank == 2 else [0, pads[0], 0, pads[1]]), value=fill),
                            pair(kernel), dilation=pair(dil), stride=pair(strides))
            return cols.view(x.shape[0], x.shape[1], -1, cols.shape[-1]).sum(2)
        y = windows(x, 0.0) / windows(torch.ones_like(x), float(count_pad))
        out = [(n + p0 + p1 - (k - 1) * d - 1) // s + 1
               for n, k, s, d, p0, p1 in zip(size, kernel, strides, dil, pads[:rank], pads[rank:])]
        return y.view(*x.shape[:2], *out)
    return windowed_mean


POOL = {  # op, x shape, attributes
    "max_2d_k2s2": ("MaxPool", (1, 2, 6, 6), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "max_2d_k3s2_p1": ("MaxPool", (2, 2, 7, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "max_2d_ceil": ("MaxPool", (1, 2, 6, 6), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "max_2d_ceil_p1": ("MaxPool", (1, 1, 8, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                                                 "ceil_mode": 1}),
    "max_2d_asym_pads": ("MaxPool", (1, 2, 6, 7), {"kernel_shape": [3, 3], "strides": [2, 1], "pads": [1, 0, 0, 1]}),
    "max_2d_d2": ("MaxPool", (1, 1, 9, 9), {"kernel_shape": [3, 3], "dilations": [2, 2], "pads": [1, 1, 1, 1]}),
    "max_2d_same_upper": ("MaxPool", (1, 2, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    "max_2d_same_lower": ("MaxPool", (1, 2, 6, 5), {"kernel_shape": [2, 2], "auto_pad": "SAME_LOWER"}),
    "max_2d_valid": ("MaxPool", (1, 2, 7, 6), {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": "VALID"}),
    "max_1d": ("MaxPool", (2, 3, 9), {"kernel_shape": [3], "strides": [2]}),
    "max_1d_ceil_d2_p1": ("MaxPool", (1, 2, 10), {"kernel_shape": [2], "strides": [2], "dilations": [2],
                                                  "pads": [1, 1], "ceil_mode": 1}),
    "avg_2d_k2s2": ("AveragePool", (1, 2, 6, 6), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "avg_2d_p1": ("AveragePool", (2, 2, 7, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "avg_2d_p1_cip": ("AveragePool", (2, 2, 7, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                                                    "count_include_pad": 1}),
    "avg_2d_ceil_p1": ("AveragePool", (1, 1, 8, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                                                     "ceil_mode": 1}),
    "avg_2d_ceil_p1_cip": ("AveragePool", (1, 1, 8, 7), {"kernel_shape": [3, 3], "strides": [2, 2],
                                                         "pads": [1, 1, 1, 1], "ceil_mode": 1, "count_include_pad": 1}),
    "avg_2d_asym_pads": ("AveragePool", (1, 2, 6, 7), {"kernel_shape": [3, 3], "strides": [2, 1], "pads": [1, 0, 0, 2]}),
    "avg_2d_asym_pads_cip": ("AveragePool", (1, 2, 6, 7), {"kernel_shape": [3, 3], "strides": [2, 1],
                                                           "pads": [1, 0, 0, 2], "count_include_pad": 1}),
    "avg_2d_same_upper": ("AveragePool", (1, 2, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 2],
                                                        "auto_pad": "SAME_UPPER"}),
    "avg_2d_valid": ("AveragePool", (1, 2, 7, 6), {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": "VALID"}),
    "avg_1d_p1_cip": ("AveragePool", (2, 3, 9), {"kernel_shape": [3], "strides": [2], "pads": [1, 1],
                                                 "count_include_pad": 1}),
    "avg_1d_ceil": ("AveragePool", (1, 2, 10), {"kernel_shape": [3], "strides": [2], "ceil_mode": 1}),
}

DILATED_AVG = {  # AveragePool's dilations arrived in opset 19
    "avg_2d_d2": ((1, 2, 9, 8), {"kernel_shape": [3, 2], "dilations": [2, 2], "pads": [1, 1, 2, 0]}),
    "avg_2d_d2_cip": ((1, 2, 9, 8), {"kernel_shape": [3, 2], "strides": [2, 1], "dilations": [2, 3],
                                     "pads": [2, 1, 1, 1], "count_include_pad": 1}),
    "avg_1d_d2_same_lower": ((1, 2, 9), {"kernel_shape": [2], "dilations": [2], "auto_pad": "SAME_LOWER"}),
}


@pytest.mark.parametrize("case", POOL)
def test_pool(tmp_path, case):
    op, x_shape, attrs = POOL[case]
    run_case(tmp_path, op, [rand(*x_shape)], pool_ref(op, attrs, x_shape[2:]), attrs)


@pytest.mark.parametrize("case", DILATED_AVG)
def test_average_pool_dilations(tmp_path, monkeypatch, case):
    x_shape, attrs = DILATED_AVG[case]
    monkeypatch.setattr(test_ops, "onnx_model", functools.partial(onnx_model, opset=19))
    run_case(tmp_path, "AveragePool", [rand(*x_shape)], pool_ref("AveragePool", attrs, x_shape[2:]), attrs)


def test_max_pool_ties_go_to_first_max(tmp_path):
    """Overlapping windows over a few distinct values: ties everywhere, as in PyTorch."""
    x = test_ops.RNG.integers(-1, 2, size=(1, 2, 6, 6)).astype(np.float32)
    run_case(tmp_path, "MaxPool", [x], lambda t: F.max_pool2d(t, 2, 1), {"kernel_shape": [2, 2]})


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (2, 3, 7), (1, 2, 3, 2, 2)], ids=str)
def test_global_average_pool(tmp_path, shape):
    spatial = tuple(range(2, len(shape)))
    run_case(tmp_path, "GlobalAveragePool", [rand(*shape)], lambda t: t.mean(spatial, keepdim=True))


# ---- what PyTorch cannot express: forward against onnxruntime or the ONNX reference ----
def free_dims(shape):
    """An output shape left to shape inference."""
    return [f"d{i}" for i in range(len(shape))]


def run_onnxruntime(model, x):
    return ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]


def run_reference(model, x):
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


ORACLE = {  # op, x shape, weight shape (Conv) or None, attributes, oracle
    # onnxruntime refuses dilations with SAME_*; the ONNX reference pads for the dilated kernel
    "conv_same_upper_d2": ("Conv", (1, 2, 8, 7), (2, 2, 3, 2), {"auto_pad": "SAME_UPPER", "dilations": [2, 2],
                                                                 "strides": [2, 1]}, run_reference),
    "max_ceil_asym_pads": ("MaxPool", (1, 2, 7, 9), None, {"kernel_shape": [3, 3], "strides": [2, 2],
                                                           "pads": [1, 0, 0, 1], "ceil_mode": 1}, run_onnxruntime),
    "avg_ceil_asym_pads_cip": ("AveragePool", (1, 2, 7, 9), None, {"kernel_shape": [3, 3], "strides": [2, 2],
                                                                   "pads": [1, 0, 0, 1], "ceil_mode": 1,
                                                                   "count_include_pad": 1}, run_onnxruntime),
}


@pytest.mark.parametrize("case", ORACLE)
def test_forward_against_onnx_runtimes(tmp_path, case):
    op, x_shape, w_shape, attrs, oracle = ORACLE[case]
    inits = {"w": rand(*w_shape)} if w_shape else {}
    x = rand(*x_shape)
    want = oracle(onnx_model([helper.make_node(op, ["x", *inits], ["y"], **attrs)], {"x": list(x_shape)},
                             {"y": free_dims(x_shape)}, inits), x)
    path = tmp_path / "op.onnx"  # x + 0 through a parameter: a trainer needs one
    onnx_model([helper.make_node("Add", ["x", "zero"], ["a"]), helper.make_node(op, ["a", *inits], ["y"], **attrs)],
               {"x": list(x_shape)}, {"y": list(want.shape)}, {**inits, "zero": np.zeros(x_shape, np.float32)},
               path=path)
    np.testing.assert_allclose(compile_model(path, tmp_path / "build").predict(x), want, rtol=1e-5, atol=1e-6)


# ---- refusals ----
REFUSED = {  # op, x shape, attributes, extra outputs, message (Indices that are read: test_loader)
    "3d": ("MaxPool", (1, 1, 4, 4, 4), {"kernel_shape": [2, 2, 2]}, [], "3 spatial"),
    "pads_as_large_as_kernel": ("AveragePool", (1, 1, 6, 6), {"kernel_shape": [2, 2], "pads": [2, 0, 0, 0]}, [],
                                "as large as the kernel"),
    # onnx shape inference keeps a last ceil_mode window that would start in the end padding
    "ceil_mode_shape": ("MaxPool", (1, 1, 4, 4), {"kernel_shape": [1, 1], "strides": [2, 2], "ceil_mode": 1}, [],
                        "shape inference"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_refused(tmp_path, case):
    op, x_shape, attrs, extra, message = REFUSED[case]
    path = tmp_path / "op.onnx"
    onnx_model([helper.make_node(op, ["x"], ["y", *extra], **attrs)], {"x": list(x_shape)},
               {"y": free_dims(x_shape)}, {}, path=path)
    with pytest.raises(UnsupportedError, match=message):
        codegen.generate(path, tmp_path / "build")


# ---- PyTorch exports ----
class LeNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(4, 6, 3), torch.nn.ReLU(), torch.nn.AvgPool2d(2), torch.nn.Flatten())
        self.classifier = torch.nn.Linear(6 * 2 * 2, 10)

    def forward(self, x):
        return self.classifier(self.features(x))


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_lenet_export(tmp_path, dynamo):
    torch.manual_seed(0)
    net = LeNet()
    x = rand(2, 1, 12, 12)
    path = export_torch(net, torch.tensor(x), tmp_path / "lenet.onnx", dynamo=dynamo)
    trainer = compile_model(path, tmp_path / "build", loss="mse")
    with torch.no_grad():
        np.testing.assert_allclose(trainer.predict(x), net(torch.tensor(x)).numpy(), rtol=1e-5, atol=1e-5)
