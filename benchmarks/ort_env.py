"""onnxruntime-training lives in its own virtual environment (it needs onnx <= 1.17; the project
uses a newer onnx), created once and cached, shared by the benchmarks and the tests. The venv also
sees this environment's packages (torch, to build training artifacts), its own onnx shadowing
ours; the timing process keeps torch out (ort_step.py)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGES = ["onnxruntime-training-cpu==1.19.2", "onnx<=1.17"]


def location() -> Path:
    cache = Path(os.environ.get("MCUTRAIN_CACHE", Path.home() / ".cache" / "mcutrain"))
    return cache / "ort-training-1.19.2"


def ready() -> bool:
    """Whether the venv exists already (creating it takes a minute or more)."""
    return (location() / "bin" / "python").exists()


def see_this_environment(venv: Path) -> None:
    """A .pth file puts this environment's site-packages after the venv's own (whether this is
    a venv or not, which --system-site-packages would not cover): torch is found, while the
    venv's onnx 1.17 shadows ours."""
    paths = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "mcutrain-parent.pth").write_text("\n".join(sorted(paths)) + "\n")


def python() -> Path:
    """The venv's interpreter, creating the venv first if needed (built aside, then renamed into
    place: a concurrent builder may win, and an interrupted one leaves nothing half-made).
    Raises subprocess.CalledProcessError / TimeoutExpired when pip cannot install the packages."""
    where = location()
    exe = where / "bin" / "python"
    if ready():
        return exe
    where.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=where.parent, prefix="ort-venv-"))
    try:
        subprocess.run([sys.executable, "-m", "venv", str(staging)], check=True, capture_output=True, text=True)
        see_this_environment(staging)
        subprocess.run([str(staging / "bin" / "python"), "-m", "pip", "install", "-q", *PACKAGES], check=True,
                       capture_output=True, text=True, timeout=300)
        os.replace(staging, where)
    except OSError:
        pass  # another process put its venv in place first
    finally:
        shutil.rmtree(staging, ignore_errors=True)
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
