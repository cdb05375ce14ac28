"""Boards: the generated trainer, cross-compiled into firmware with an embedded data set, trains
under QEMU like the host build does; memory limits, faults, hangs and the drop-in library.

Tolerances: the firmware and the host compile the same C with -ffp-contract=off, but the host
takes the vector kernels (MT_SIMD) and the boards the scalar ones: forward and input gradients
round identically, weight gradients are sums in another order (8 lanes vs one running sum), and
the C library's expf/logf (newlib/picolibc on the boards, glibc on the host) may differ by an
ulp; the differences compound through the training steps. Per-epoch losses must agree to rtol
1e-5 and final weights to atol 1e-5 (float32 weights of magnitude < 1 have an ulp of <= 6e-8;
measured: max 6e-8 for the MLP, 9e-8 for the CNN).
The host-target firmware (same compiler, kernels and libm as the cffi build) must match the
cffi build bit for bit."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch
from elftools.elf.elffile import ELFFile
from typer.testing import CliRunner

import codegen
from codegen import elfsize, firmware, library, qemu, targets
from codegen.cli import app
from codegen.errors import FitError, OptionError, ToolchainError
from helpers import export_torch

EPOCHS, SAMPLES, BATCH = 3, 128, 8
BOARDS = ["cortex-m4f", "cortex-m3", "rv32imafc"]


def need(name: str) -> targets.Target:
    """The target, or skip with the missing package named (CI installs them all)."""
    target = targets.load(name)
    try:
        target.require_compiler()
        target.require_emulator()
    except ToolchainError as e:
        pytest.skip(str(e))
    return target


def mlp(tmp, sizes, name="mlp"):
    torch.manual_seed(0)
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    path = export_torch(torch.nn.Sequential(*layers[:-1]), torch.zeros(BATCH, sizes[0]), tmp / f"{name}.onnx",
                        dynamo=False)
    codegen.generate(path, tmp / name, loss="cross_entropy", lr=0.05)
    return tmp / name


def clusters(features: int) -> tuple[np.ndarray, np.ndarray]:
    """4 noisy clusters in `features` dimensions and their labels."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, features)).astype(np.float32)
    y = rng.integers(0, 4, SAMPLES)
    return (centers[y] + 0.8 * rng.normal(size=(SAMPLES, features))).astype(np.float32), y


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A 32-16-4 MLP and 4 noisy clusters (as the .npz `mcutrain build --data` takes)."""
    tmp = tmp_path_factory.mktemp("boards")
    x, y = clusters(32)
    np.savez(tmp / "data.npz", x=x, y=y)
    return mlp(tmp, [32, 16, 4]), x, y


@pytest.fixture(scope="module")
def cnn_model(tmp_path_factory):
    """A small CNN (Conv 3x3, ReLU, MaxPool, Linear) on the clusters as 1x8x8 images."""
    tmp = tmp_path_factory.mktemp("cnn")
    x, y = clusters(64)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(64, 4))
    path = export_torch(net, torch.zeros(BATCH, 1, 8, 8), tmp / "cnn.onnx", dynamo=False)
    codegen.generate(path, tmp / "cnn", loss="cross_entropy", lr=0.05)
    return tmp / "cnn", x.reshape(SAMPLES, 1, 8, 8), y


@pytest.fixture(scope="module")
def qcnn_model(cnn_model):
    """The small CNN quantized by onnxruntime (QDQ, int8 per-channel): the frozen conv runs in
    int8, the head trains in float and the conv's bias in float through the int8 layer."""
    ortq = pytest.importorskip("onnxruntime.quantization", reason="onnxruntime (a dev extra) quantizes the model")
    build, x, y = cnn_model

    class Reader(ortq.CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": x[i:i + BATCH]} for i in range(0, 64, BATCH)])

        def get_next(self):
            return next(self.batches, None)

    quantized = build.parent / "qcnn.onnx"
    ortq.quantize_static(str(build.parent / "cnn.onnx"), str(quantized), Reader(), quant_format=ortq.QuantFormat.QDQ,
                         per_channel=True, activation_type=ortq.QuantType.QInt8, weight_type=ortq.QuantType.QInt8)
    codegen.generate(quantized, build.parent / "qcnn", loss="cross_entropy", lr=0.05, train_last=1, train_bias_last=2)
    return build.parent / "qcnn", x, y


def host_training(model):
    """The same batches, in the same order, through the cffi host build: per-epoch mean loss
    (float32 sum over the steps / steps, as the harness computes it), accuracy, final weights."""
    build, x, y = model
    trainer = codegen.load_host(build)
    losses = []
    for _ in range(EPOCHS):
        total = np.float32(0)
        for i in range(0, SAMPLES, BATCH):
            total = np.float32(total + np.float32(trainer.train_step(x[i:i + BATCH], y[i:i + BATCH])))
        losses.append(total / np.float32(SAMPLES // BATCH))
    correct = sum(int(np.sum(trainer.predict(x[i:i + BATCH]).argmax(1) == y[i:i + BATCH]))
                  for i in range(0, SAMPLES, BATCH))
    params = np.concatenate([p.ravel() for p in trainer.get_params().values()])
    return np.array(losses, np.float32), correct / SAMPLES, params


@pytest.fixture(scope="module")
def host(model):
    return host_training(model)


@pytest.fixture(scope="module")
def cnn_host(cnn_model):
    return host_training(cnn_model)


@pytest.fixture(scope="module")
def qcnn_host(qcnn_model):
    return host_training(qcnn_model)


def train_on(model, target: str) -> tuple[firmware.Report, qemu.RunResult]:
    build, x, y = model
    firmware.build(build, target, x, y, EPOCHS)
    result = qemu.run(build, target, timeout=60)
    assert result.code == 0, result.output[-2000:]
    report = firmware.parse_output(result.output)
    assert report.done and len(report.losses) == EPOCHS
    return report, result


@pytest.mark.parametrize("target, kind", [(t, k) for t in BOARDS for k in ("mlp", "cnn")]
                         + [("cortex-m4f", "qcnn"), ("rv32imafc", "qcnn")])
def test_firmware_trains_like_host(request, kind, target):
    need(target)
    model = request.getfixturevalue("model" if kind == "mlp" else f"{kind}_model")
    host = request.getfixturevalue("host" if kind == "mlp" else f"{kind}_host")
    report, result = train_on(model, target)
    losses, accuracy, params = host
    print(f"{kind} on {target}: losses {report.losses} (host {losses}), max |w - host| "
          f"{np.abs(report.params - params).max():.2e}, {result.work}")
    np.testing.assert_allclose(report.losses, losses, rtol=1e-5)
    assert report.metric == "accuracy" and report.value == pytest.approx(accuracy, abs=1 / SAMPLES)
    assert report.params.shape == params.shape
    np.testing.assert_allclose(report.params, params, rtol=0, atol=1e-5)
    assert report.losses[-1] < report.losses[0]
    assert result.work is not None and result.work.steps == EPOCHS * SAMPLES // BATCH
    assert result.work.per_step > 1000


def test_host_firmware_is_standalone_and_matches_cffi(model, host):
    """The host target: the same harness as a native program (no Python), bit-identical to cffi."""
    if not shutil.which("cc"):
        pytest.skip("no host C compiler (apt-get install gcc)")
    report, result = train_on(model, "host")
    assert result.work is None and "host" in result.note
    assert report.losses.tobytes() == host[0].tobytes()
    assert report.params.tobytes() == host[2].tobytes()


def test_cli_build_run_size(model):
    need("cortex-m4f")
    build = model[0]
    data = build.parent / "data.npz"
    runner = CliRunner()
    done = runner.invoke(app, ["build", str(build), "--target", "cortex-m4f", "--data", str(data), "--epochs", "2"])
    assert done.exit_code == 0, done.output
    done = runner.invoke(app, ["run", str(build), "--target", "cortex-m4f", "--timeout", "60"])
    assert done.exit_code == 0, done.output
    assert "epoch 2: loss " in done.output and "instructions/training step" in done.output
    assert "0x" not in done.output.split("work:")[0]  # bit patterns only with --verbose
    done = runner.invoke(app, ["size", str(build), "--target", "cortex-m4f"])
    assert done.exit_code == 0, done.output
    for what in ("text", "arena", "mlp_arena", "mlp_params", "mt_data_x", "of 131,072 B"):
        assert what in done.output


def test_size_shows_int8_weights(qcnn_model):
    """The frozen int8 weights are a part of their own in the flash (arrays qcnn_w<k>)."""
    need("cortex-m4f")
    build, x, y = qcnn_model
    firmware.build(build, "cortex-m4f", x[:8], y[:8])
    parts = {p.what: p for p in elfsize.measure(build / "cortex-m4f" / "firmware.elf", "qcnn").parts}
    weights = parts["frozen int8 weights"]
    assert weights.region == "flash" and 4 * 9 <= weights.bytes < 4 * 4 * 9 + 64


def test_too_big_for_ram_fails_at_build_time(tmp_path, model):
    """256-128-10 has 137 KB of parameters: more than the Cortex-M3's 64 KiB RAM, fine on the host."""
    build = mlp(tmp_path, [256, 128, 10], "big")
    x, y = np.zeros((16, 256), np.float32), np.zeros(16, np.int64)
    sizes = r"RAM of target 'cortex-m3': needs at least [\d,]+ B \(arena [\d,]+ B \+ parameters 136,744 B.*has 65,536 B"
    with pytest.raises(FitError, match=sizes):
        firmware.build(build, "cortex-m3", x, y)
    assert not (build / "cortex-m3" / "firmware.elf").exists()
    np.savez(tmp_path / "zeros.npz", x=x, y=y)
    done = CliRunner().invoke(app, ["build", str(build), "--target", "cortex-m3", "--data", str(tmp_path / "zeros.npz")])
    assert done.exit_code == 2 and "does not fit the RAM" in done.output and "Traceback" not in done.output


def _patch(elf, symbol: str, code: bytes) -> None:
    """Overwrite the first instruction(s) of a function in the ELF file."""
    with open(elf, "r+b") as f:
        address = elfsize.symbol_address(elf, symbol)
        for s in ELFFile(f).iter_sections():
            if s["sh_type"] == "SHT_PROGBITS" and s["sh_addr"] <= address < s["sh_addr"] + s["sh_size"]:
                offset = s["sh_offset"] + address - s["sh_addr"]
                break
        f.seek(offset)
        f.write(code)


@pytest.mark.parametrize("code, expected", [(b"\x00\xde", 127), (b"\xfe\xe7", qemu.TIMEOUT_EXIT)],
                         ids=["fault (udf)", "hang (b .)"])
def test_faulting_or_hanging_firmware_exits_nonzero(tmp_path, model, code, expected):
    need("cortex-m4f")
    build, x, y = model
    work = tmp_path / "fw"
    shutil.copytree(build, work, ignore=shutil.ignore_patterns("cortex-m*", "rv32*", "host"))
    firmware.build(work, "cortex-m4f", x[:16], y[:16])
    _patch(work / "cortex-m4f" / "firmware.elf", "mlp_train_step", code)
    result = qemu.run(work, "cortex-m4f", timeout=3)
    assert result.code == expected and result.timed_out == (expected == qemu.TIMEOUT_EXIT)


def test_missing_toolchain_names_the_package(tmp_path, model):
    """A board is one .toml file; a missing compiler is reported with the Debian package to install."""
    (tmp_path / "myboard.toml").write_text(
        '[toolchain]\ncc = "no-such-gcc"\npackages = ["gcc-myboard"]\n')
    board = str(tmp_path / "myboard.toml")
    with pytest.raises(ToolchainError, match="apt-get install gcc-myboard"):
        firmware.build(model[0], board, model[1], model[2])
    done = CliRunner().invoke(app, ["build", str(model[0]), "--target", board, "--library"])
    assert done.exit_code == 0, done.output  # a library needs no compiler


def test_board_based_on_a_core_target(tmp_path):
    """nrf52840 is cortex-m4f with the chip's memory; a board file may extend any known target."""
    nrf, m4 = targets.load("nrf52840"), targets.load("cortex-m4f")
    assert (nrf.memory.ram, nrf.memory.flash) == (256 * 1024, 1024 * 1024)
    assert (nrf.cc, nrf.cflags, nrf.qemu) == (m4.cc, m4.cflags, m4.qemu)
    (tmp_path / "loop.toml").write_text('based_on = "loop"\n')
    with pytest.raises(OptionError, match="based_on: 'loop' is not a known target"):
        targets.load(str(tmp_path / "loop.toml"))


APP = """#include <stdio.h>
#include "mlp.h"

static float sample[MLP_INPUT_SIZE];
static mlp_label_t label[MLP_LABEL_SIZE];
static float out[MLP_OUTPUT_SIZE];

int main(void)
{
    int i;
    float loss;
    for (i = 0; i < MLP_INPUT_SIZE; ++i) sample[i] = (float)(i % 7) * 0.1f; /* collect a sample */
    for (i = 0; i < MLP_LABEL_SIZE; ++i) label[i] = (mlp_label_t)(i % 2);
    loss = mlp_train_step(sample, label);                                    /* train */
    mlp_predict(sample, out);                                                /* infer */
    printf("loss %d out %d\\n", (int)(loss * 1000.0f), (int)(out[0] * 1000.0f));
    return 0;
}
"""
CMAKE = """cmake_minimum_required(VERSION 3.13)
project(app C)
add_compile_options(-Wall -Wextra -Werror)
add_subdirectory(${MLP_DIR} mlp)
add_executable(app main.c)
target_link_libraries(app PRIVATE mlp)
if(CMAKE_CROSSCOMPILING)
  target_link_options(app PRIVATE --specs=nosys.specs)
endif()
"""


@pytest.mark.parametrize("target", ["host", "cortex-m4f"])
def test_library_builds_in_fresh_cmake_project(tmp_path, model, target):
    if not shutil.which("cmake"):
        pytest.skip("cmake not installed (apt-get install cmake)")
    if target != "host":
        need(target)
    lib = library.build_library(model[0], target, tmp_path / "lib" / "mlp")
    assert {"CMakeLists.txt", "library.json", "src"} <= {p.name for p in lib.iterdir()}
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.c").write_text(APP)
    (tmp_path / "app" / "CMakeLists.txt").write_text(CMAKE)
    cmd = ["cmake", "-S", tmp_path / "app", "-B", tmp_path / "b", f"-DMLP_DIR={lib}"]
    if target != "host":
        cmd.append(f"-DCMAKE_TOOLCHAIN_FILE={lib / f'toolchain-{target}.cmake'}")
    subprocess.run(cmd, check=True, capture_output=True)
    subprocess.run(["cmake", "--build", tmp_path / "b"], check=True, capture_output=True)
    if target == "host":
        ran = subprocess.run([tmp_path / "b" / "app"], check=True, capture_output=True, text=True)
        assert ran.stdout.startswith("loss ")
