"""Issue 14's "Fit" proof (benchmarks/int8_fit.py): int8 backbones personalized with the head and
the last 4 biases (batch 1, plain SGD) fit the boards. The MobileNetV2-0.35 (96x96x3) fits the
nrf52840 (RAM with the stack reserve, flash with one embedded sample) and runs a training step
under QEMU; the DS-CNN keyword spotter needs <= 64 KB."""
from __future__ import annotations

import pytest

from benchmarks import int8_fit
from codegen import targets
from codegen.errors import ToolchainError

pytest.importorskip("onnxruntime", reason="onnxruntime (a dev extra) quantizes the models")


def int8_build(model: int8_fit.Model, folder) -> tuple[dict, object]:
    """(the summary's memory, the build folder) of the quantized model."""
    out = folder / f"{model.name}_int8"
    return int8_fit.generate(model.quantize(model.export(folder)), out), out


def test_mobilenet_v2_trains_on_nrf52840(tmp_path):
    target = targets.load(int8_fit.TARGET)
    try:
        target.require_compiler()
        target.require_emulator()
    except ToolchainError as e:
        pytest.skip(str(e))
    model = int8_fit.MODELS[0]
    memory, out = int8_build(model, tmp_path)
    limit = target.memory
    assert int8_fit.ram(memory) + limit.stack <= limit.ram
    size, run = int8_fit.run_on_board(out, model.sample, timeout=120)
    print(f"RAM {size['ram']:,} B, flash {size['flash']:,} B; {run.work or run.note}")
    assert run.code == 0, run.output[-2000:]
    assert size["ram"] <= limit.ram and size["flash"] <= limit.flash


def test_ds_cnn_needs_at_most_64_kb(tmp_path):
    memory, _ = int8_build(int8_fit.MODELS[1], tmp_path)
    assert int8_fit.ram(memory) <= int8_fit.KWS_RAM
