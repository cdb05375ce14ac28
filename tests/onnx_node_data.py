"""The ONNX test data of the onnx 1.17.0 wheel: the node tests (onnx/backend/test/data/node/: one
small model per operator variant, with reference inputs and outputs) and the model-zoo light graphs
(onnx/backend/test/data/light/: light_<model>.onnx, weights made by ConstantOfShape, and
light_<model>_output_0.pb, the output for the input arange(n) / n). Wheels after onnx 1.17.0 leave
them out, so the 1.17.0 wheel is downloaded once with pip (no install) into the mcutrain cache and
only those folders unzipped."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from codegen.build import cache_dir

VERSION = "1.17.0"
DATA = "onnx/backend/test/data/"
FOLDERS = ("node", "light")
# One fixed wheel (the data is the same in all of them), so any host can fetch it.
WHEEL_TAGS = ["--platform", "manylinux2014_x86_64", "--python-version", "311",
              "--implementation", "cp", "--abi", "cp311"]


class Unavailable(Exception):
    """The wheel could not be downloaded (no package index reachable): tests skip with this."""


def node_data() -> Path:
    """The node-test folder, downloaded and unzipped on first use; later calls reuse it."""
    return _data("node")


def light_data() -> Path:
    """The model-zoo light graphs' folder, as node_data()."""
    return _data("light")


def _data(name: str) -> Path:
    root = cache_dir() / "onnx-1.17-node-data"
    folder = root / name
    if not folder.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            _unzip(_download(Path(tmp)), Path(tmp) / "data")
            for each in FOLDERS:  # one download serves every folder missing from the cache
                if not (root / each).is_dir():
                    _publish(Path(tmp) / "data" / DATA / each, root / each)
    return folder


def _download(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", f"onnx=={VERSION}", "--no-deps",
           "--only-binary=:all:", *WHEEL_TAGS, "--disable-pip-version-check", "-d", str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wheels = list(dest.glob("onnx-*.whl"))
    if done.returncode or not wheels:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise Unavailable(f"cannot download onnx {VERSION} for its test data: {lines[-1]}")
    return wheels[0]


def _unzip(wheel: Path, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        z.extractall(dest, [n for n in z.namelist() if n.startswith(tuple(DATA + f + "/" for f in FOLDERS))])


def _publish(staged: Path, folder: Path) -> None:
    """Atomic, so a concurrent worker sees the whole folder or none; the first one wins."""
    try:
        os.rename(staged, folder)
    except OSError:
        if not folder.is_dir():
            raise
