"""onnxruntime-training lives in its own virtual environment (it needs onnx <= 1.17; the project
uses a newer onnx), created once and cached. torch is installed there only to build the training
artifacts; the timing process never imports it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGES = ["onnxruntime-training-cpu==1.19.2", "onnx<=1.17", "numpy"]
ARTIFACT_PACKAGES = ["torch==2.13.0"]


def location() -> Path:
    cache = Path(os.environ.get("MCUTRAIN_CACHE", Path.home() / ".cache" / "mcutrain"))
    return cache / "ort-venv"


def python() -> Path:
    """The venv's interpreter, creating the venv first if needed (a marker says it is complete)."""
    where = location()
    exe, ready = where / "bin" / "python", where / "ready"
    if not ready.is_file():
        venv.create(where, with_pip=True, clear=True)
        for packages in (PACKAGES, ARTIFACT_PACKAGES):  # two steps, as the artifacts alone need torch
            subprocess.run([str(exe), "-m", "pip", "install", "-q", *packages], check=True)
        ready.write_text("\n".join(PACKAGES + ARTIFACT_PACKAGES))
    return exe


def artifacts(model: Path, loss: str, out: Path) -> Path:
    if not (out / "checkpoint").exists():
        subprocess.run([str(python()), str(HERE / "ort_artifacts.py"), str(model), loss, str(out)],
                       check=True, capture_output=True)
    return out


def time_steps(folder: Path, loss: str, batch: int, classes: int, steps: int, repeats: int, lr: float) -> dict:
    done = subprocess.run([str(python()), str(HERE / "ort_step.py"), str(folder), loss, str(batch), str(classes),
                           str(steps), str(repeats), str(lr)], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(python(), file=sys.stderr)
