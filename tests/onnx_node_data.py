"""The ONNX node tests (onnx/backend/test/data/node/: one small model per operator variant, with
reference inputs and outputs). Wheels after onnx 1.17.0 leave them out, so the 1.17.0 wheel is
downloaded once with pip (no install) into the mcutrain cache and only that folder unzipped."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from codegen.build import cache_dir

VERSION = "1.17.0"
MEMBERS = "onnx/backend/test/data/node/"
# One fixed wheel (the data is the same in all of them), so any host can fetch it.
WHEEL_TAGS = ["--platform", "manylinux2014_x86_64", "--python-version", "311",
              "--implementation", "cp", "--abi", "cp311"]


class Unavailable(Exception):
    """The wheel could not be downloaded (no package index reachable): tests skip with this."""


def node_data() -> Path:
    """The node-test folder, downloaded and unzipped on first use; later calls reuse it."""
    root = cache_dir() / "onnx-1.17-node-data"
    folder = root / "node"
    if not folder.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            _unzip(_download(Path(tmp)), Path(tmp) / "data")
            _publish(Path(tmp) / "data" / MEMBERS, folder)
    return folder


def _download(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", f"onnx=={VERSION}", "--no-deps",
           "--only-binary=:all:", *WHEEL_TAGS, "--disable-pip-version-check", "-d", str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wheels = list(dest.glob("onnx-*.whl"))
    if done.returncode or not wheels:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise Unavailable(f"cannot download onnx {VERSION} for its node-test data: {lines[-1]}")
    return wheels[0]


def _unzip(wheel: Path, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        z.extractall(dest, [n for n in z.namelist() if n.startswith(MEMBERS)])


def _publish(staged: Path, folder: Path) -> None:
    """Atomic, so a concurrent worker sees the whole folder or none; the first one wins."""
    try:
        os.rename(staged, folder)
    except OSError:
        if not folder.is_dir():
            raise
