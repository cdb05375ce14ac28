"""The int8 convolution's DSP path (runtime_c/kernels/conv_s8_dsp.h, SMLAD) on a Cortex-M4F under
QEMU gives the same integers as the host's portable code: a one-op QLinearConv model (per-channel
weights, non-zero input zero point, padding) trains its float parameter p on the outputs, and the
firmware's trained p must equal the host's bit for bit (p = -lr * the mse gradient: elementwise
float32 of the dequantized int8 outputs, so one int8 step apart shows)."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import codegen
from codegen import firmware, qemu
from codegen.paths import runtime_dir
from helpers import KERNELS
from test_boards import need

TARGET, SAMPLES = "cortex-m4f", 4
RNG = np.random.default_rng(14)
X_SCALE, X_ZP = np.float32(0.05), np.int8(-3)
CASES = {  # x shape (batch 2), weight shape, attributes, weight zero points
    "pointwise_padded": ((2, 22, 5, 7), (7, 22, 1, 1), {"pads": [1, 0, 0, 1]}, True),
    "pointwise_grouped_stride2": ((2, 8, 6, 6), (6, 4, 1, 1), {"group": 2, "strides": [2, 2]}, False),
    "pointwise_wide": ((2, 40, 3, 4), (4, 40, 1, 1), {}, False),
    "pointwise_deep_tiles": ((2, 203, 4, 5), (5, 203, 1, 1), {}, True),  # 3 pixel tiles, the last partial
    "depthwise_pad1": ((2, 5, 7, 9), (5, 1, 3, 3), {"group": 5, "pads": [1, 1, 1, 1]}, False),
    "depthwise_uneven_pads": ((2, 3, 6, 8), (3, 1, 3, 3), {"group": 3, "pads": [0, 2, 1, 0]}, True),
    "depthwise_narrow": ((2, 2, 5, 3), (2, 1, 3, 3), {"group": 2}, False),
    "full_3x3_fallback": ((2, 3, 5, 5), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}, False),
}


def conv_model(tmp_path, case):
    """x -> QuantizeLinear -> QLinearConv -> DequantizeLinear -> + p, saved as conv.onnx."""
    x_shape, w_shape, attrs, w_zp = CASES[case]
    m, (h, w), (kh, kw) = w_shape[0], x_shape[2:], w_shape[2:]
    pads, strides = attrs.get("pads", [0, 0, 0, 0]), attrs.get("strides", [1, 1])
    y_shape = (x_shape[0], m, (h + pads[0] + pads[2] - kh) // strides[0] + 1,
               (w + pads[1] + pads[3] - kw) // strides[1] + 1)
    inits = {"x_scale": X_SCALE, "x_zp": X_ZP, "w": RNG.integers(-127, 128, w_shape).astype(np.int8),
             "w_scale": RNG.uniform(0.005, 0.02, m).astype(np.float32),
             "w_zp": (RNG.integers(-9, 10, m) if w_zp else np.zeros(m)).astype(np.int8),
             "y_scale": np.float32(0.4 * np.sqrt(np.prod(w_shape[1:]))), "y_zp": np.int8(4),  # a few saturate
             "b": RNG.integers(-3000, 3000, m).astype(np.int32), "p": np.zeros(y_shape, np.float32)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"]),
             helper.make_node("QLinearConv", ["xq", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp",
                                              "b"], ["yq"], **attrs),
             helper.make_node("DequantizeLinear", ["yq", "y_scale", "y_zp"], ["yf"]),
             helper.make_node("Add", ["yf", "p"], ["y"])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                              [numpy_helper.from_array(np.asarray(v), n) for n, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(tmp_path / "conv.onnx"))
    return tmp_path / "conv.onnx", x_shape, y_shape


def levels(shape):
    """Float32 inputs that quantize exactly to random int8 levels."""
    q = RNG.integers(-128, 128, shape).astype(np.float32)
    return (q - np.float32(X_ZP)) * X_SCALE


@pytest.mark.parametrize("case", sorted(CASES))
def test_dsp_conv_matches_host(tmp_path, case):
    need(TARGET)
    path, x_shape, y_shape = conv_model(tmp_path, case)
    build = tmp_path / "build"
    codegen.generate(path, build, loss="mse", lr=0.5)
    x = np.concatenate([levels(x_shape) for _ in range(SAMPLES // x_shape[0])])
    y = np.zeros((SAMPLES, *y_shape[1:]), np.float32)
    trainer = codegen.load_host(build, KERNELS["scalar"])
    for i in range(0, SAMPLES, x_shape[0]):
        trainer.train_step(x[i:i + x_shape[0]], y[i:i + x_shape[0]])
    host = np.concatenate([p.ravel() for p in trainer.get_params().values()])
    firmware.build(build, TARGET, x, y, epochs=1)
    result = qemu.run(build, TARGET, timeout=60)
    assert result.code == 0, result.output[-2000:]
    report = firmware.parse_output(result.output)
    assert report.done and np.any(host != 0)
    assert report.params.tobytes() == host.tobytes(), f"max |board - host| {np.abs(report.params - host).max()}"


RQ_CHECK = r"""
#include <stdio.h>
#define MT_CONV_S8_DSP 1
#include "kernels/conv_s8.h"
int main(void)
{
    unsigned s = 1;
    long bad = 0;
    int i;
    for (i = 0; i < 400000; ++i) {
        int32_t acc, mult, shift, zp;
        s = s * 1664525u + 1013904223u;
        acc = (int32_t)s >> (s % 23);
        s = s * 1664525u + 1013904223u;
        mult = (int32_t)((1u << 30) + (s >> 2));
        s = s * 1664525u + 1013904223u;
        shift = 30 + (int32_t)(s % 33);
        zp = (int32_t)(s % 9) - 4;
        if (i % 2) { /* exact ties and their neighbours: M = 2^30, acc = k 2^(n - 32) */
            mult = 1 << 30;
            shift = 33 + (int32_t)(s % 20);
            acc = ((int32_t)(s >> 20) % 64 - 32) * (int32_t)(1u << (shift - 32));
        }
        {
            mt_requant q = {&mult, &shift, 0, zp, -128, 127};
            const mt_s8_rq r = mt_s8_rq_of(&q, 0);
            bad += mt_s8_rq_apply(&r, &q, acc) != mt_requant_s8(acc, &q, 0);
        }
    }
    printf("%ld differ\n", bad);
    return bad != 0;
}
"""

# The intrinsics conv_s8_dsp.h uses, in portable C: enough to compile its requantization on the host.
ACLE_STUB = r"""
#include <stdint.h>
static inline int32_t __smlad(int32_t a, int32_t b, int32_t c) { return c + (int16_t)a * (int16_t)b + (a >> 16) * (b >> 16); }
static inline int32_t __smlabb(int32_t a, int32_t b, int32_t c) { return c + (int16_t)a * (int16_t)b; }
static inline int32_t __smlatb(int32_t a, int32_t b, int32_t c) { return c + (a >> 16) * (int16_t)b; }
static inline uint32_t __sxtb16(uint32_t a) { return (uint16_t)(int8_t)a | (uint32_t)(uint16_t)(int8_t)(a >> 16) << 16; }
static inline int32_t __ssub16(int32_t a, int32_t b)
{ return (int32_t)((uint16_t)((int16_t)a - (int16_t)b) | (uint32_t)(uint16_t)((a >> 16) - (b >> 16)) << 16); }
"""


def acle_stub(tmp_path):
    (tmp_path / "stub").mkdir(exist_ok=True)
    (tmp_path / "stub" / "arm_acle.h").write_text(ACLE_STUB)
    return tmp_path / "stub"


@pytest.mark.parametrize("case", sorted(CASES))
def test_dsp_conv_on_host(tmp_path, case):
    """The whole DSP path compiled on the host (little-endian; the intrinsics in plain C) predicts
    the portable code's bits: a fast check of its logic, the same shapes as under QEMU."""
    path, x_shape, _ = conv_model(tmp_path, case)
    x = levels(x_shape)
    codegen.generate(path, tmp_path / "build", loss="mse", lr=0.5)
    want = codegen.load_host(tmp_path / "build", KERNELS["scalar"]).predict(x)
    got = codegen.load_host(tmp_path / "build", [*KERNELS["scalar"], "-DMT_CONV_S8_DSP=1",
                                                 f"-I{acle_stub(tmp_path)}"]).predict(x)
    assert got.tobytes() == want.tobytes()


def test_dsp_requantization_matches_portable(tmp_path):
    """The DSP path's 32-bit requantization (conv_s8_dsp.h) gives mt_requant_s8's bits, exact ties
    included (compiled on the host with the intrinsics in plain C)."""
    shutil.copytree(runtime_dir(), tmp_path / "runtime")
    (tmp_path / "runtime" / "check.c").write_text(RQ_CHECK)
    subprocess.run(["cc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{acle_stub(tmp_path)}", "check.c",
                    "-o", "check"],
                   cwd=tmp_path / "runtime", check=True)
    done = subprocess.run(["./check"], cwd=tmp_path / "runtime", capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
