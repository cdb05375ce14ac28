"""A non-editable install works like the editable one: the wheel carries runtime_c/ and targets/
as package data. Built here, installed into a fresh venv and used from another folder: generate,
train, build --target cortex-m4f and run on the bundled example."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.ort_env import see_this_environment

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits"


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv with only the wheel installed; its dependencies come from this environment
    through a .pth path (no download), while mcutrain itself is the wheel's, not this checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    # setuptools builds in the source tree (build/, *.egg-info): build from a private copy, since
    # each xdist worker that runs a test of this module builds its own wheel at the same time.
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", tmp / "dist", source], cwd=tmp, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr[-4000:]
    (wheel,) = (tmp / "dist").glob("mcutrain-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp / "venv"], check=True)
    python = tmp / "venv" / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel],
                   check=True)
    see_this_environment(tmp / "venv")
    return tmp / "venv" / "bin"


def mcutrain(bin_dir: Path, cwd: Path, *args) -> str:
    done = subprocess.run([bin_dir / "mcutrain", *map(str, args)], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"mcutrain {' '.join(map(str, args))}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_wheel_is_self_contained(venv, tmp_path):
    where = subprocess.run([venv / "python", "-c", "import codegen; print(codegen.__file__); "
                            "print(codegen.runtime_dir())"], cwd=tmp_path, capture_output=True, text=True, check=True)
    module, runtime = where.stdout.split()
    assert str(venv.parent) in module and str(venv.parent) in runtime, where.stdout
    for rel in ("mt_common.h", "kernels/gemm.h", "boards/cortexm.ld", "boards/cortexm_startup.c", "boards/insncount.c"):
        assert (Path(runtime) / rel).is_file(), rel
    assert mcutrain(venv, tmp_path, "--version").split() == ["mcutrain", __import__("codegen").__version__]


def test_wheel_generate_train_build_run(venv, tmp_path):
    out = tmp_path / "digits"
    mcutrain(venv, tmp_path, "generate", DIGITS / "mlp.onnx", "--loss", "cross_entropy", "--lr", "0.05",
             "--batch", "16", "-o", out)
    assert "accuracy" in mcutrain(venv, tmp_path, "train", out, "--data", DIGITS / "digits.npz")
    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        pytest.skip("arm-none-eabi-gcc / qemu-system-arm not installed (CI installs them)")
    mcutrain(venv, tmp_path, "build", out, "--target", "cortex-m4f", "--data", DIGITS / "digits.npz",
             "--samples", "64")
    assert "\ndone\n" in mcutrain(venv, tmp_path, "run", out, "--target", "cortex-m4f")
    board = tmp_path / "my-board.toml"  # a board file elsewhere still finds runtime_c/boards/ in the package
    shutil.copy(ROOT / "targets" / "cortex-m4f.toml", board)
    mcutrain(venv, tmp_path, "build", out, "--target", board, "--data", DIGITS / "digits.npz", "--samples", "16")
    assert (out / "my-board" / "firmware.elf").is_file()
