"""Stage 5 (host): build a generated folder with cffi into a Python trainer with numpy in/out.
Builds are cached by content hash, so loading the same C again costs no compile."""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Callable

import numpy as np

from . import c_api
from .manifest import Manifest, read as read_manifest
from .blob import CODES, PARAMS, check, delta_kind, pack, sizes, split
from .errors import BuildError, DataError
from .export import export_onnx

# Every target: -ffp-contract=off, no fused multiply-add, so every target rounds the same way.
C_FLAGS = ["-std=c99", "-O2", "-ffp-contract=off"]


@functools.cache
def host_cflags() -> list[str]:
    """C_FLAGS at -O3 (the later flag wins) with the host's vector unit: AVX2 (x86-64-v3) where the
    CPU has it, so the MT_SIMD kernels use 8-float registers; the baseline instruction set
    otherwise. Not -march=native: valgrind (benchmarks/) decodes AVX2 but not AVX-512."""
    flags = [*C_FLAGS, "-O3"]
    probe = subprocess.run(["cc", "-march=native", "-dM", "-E", "-x", "c", os.devnull], capture_output=True, text=True)
    macros = set(probe.stdout.split())
    if platform.machine().lower() in ("x86_64", "amd64") and {"__AVX2__", "__FMA__", "__BMI2__"} <= macros:
        flags.append("-march=x86-64-v3")
    return flags


def cache_dir() -> Path:
    return Path(os.environ.get("MCUTRAIN_CACHE", Path.home() / ".cache" / "mcutrain"))


def _cdef(m: Manifest) -> str:
    label = "int32_t" if m.labels.dtype == "int32" else "float"
    return c_api.cdef(m.name, [i.c for i in m.inputs], label, m.federated)


# progress(text) -> a context manager around a compile that really runs (a cached build shows
# nothing): the CLI's spinner; the API prints nothing.
Progress = Callable[[str], AbstractContextManager]


def build_host(build_dir: str | Path, extra_cflags: list[str] | None = None, progress: Progress = nullcontext) -> Path:
    """Compile the folder into a CPython extension (cached); returns its path."""
    folder = Path(build_dir).resolve()
    m = read_manifest(folder)
    cflags = host_cflags() + list(extra_cflags or [])
    # The manifest vouches for the sources' contents (read_manifest verified them).
    h = hashlib.sha256(repr((cflags, sys.version, _cdef(m), sorted(m.files.items()))).encode())
    module = f"_mcutrain_{m.name}_{h.hexdigest()[:16]}"
    cached = cache_dir() / module
    found = list(cached.glob(f"{module}*.so")) + list(cached.glob(f"{module}*.pyd"))
    if found:
        return found[0]
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(_cdef(m))
    ffi.set_source(module, f'#include "{m.name}.h"', sources=[str(folder / f"{m.name}.c")],
                   include_dirs=[str(folder)], extra_compile_args=cflags,
                   extra_link_args=[f for f in cflags if f.startswith("-fsanitize")])
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp, progress(f"compiling {m.name}.c for the host"):
        try:
            built = Path(ffi.compile(tmpdir=tmp, verbose=False))
        except Exception as e:
            raise BuildError(f"C compilation of '{folder}' failed (a bug in mcutrain, please report): {e}") from None
        staged = Path(tmp) / "staged"
        staged.mkdir()
        shutil.copy2(built, staged / built.name)
        try:
            os.replace(staged, cached)  # atomic: a concurrent build of the same hash may win
        except OSError:
            pass
    return next(cached.glob(f"{module}*"))


class HostTrainer:
    """The generated C trainer, loaded in this process. Mirrors the C API with numpy arrays."""

    def __init__(self, build_dir: str | Path, extra_cflags: list[str] | None = None, progress: Progress = nullcontext):
        self.manifest = m = read_manifest(build_dir)
        self.build_dir = Path(build_dir)
        built = build_host(build_dir, extra_cflags, progress)
        # A private copy: the C state is static, and a shared library loaded twice from one
        # path is one instance. Each trainer object gets its own model state this way.
        self._tmp = tempfile.TemporaryDirectory(prefix="mcutrain-")
        path = Path(shutil.copy2(built, self._tmp.name))
        spec = importlib.util.spec_from_file_location(path.name.split(".")[0], path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        self._ffi, self._lib, self._p = mod.ffi, mod.lib, m.name
        self.batch, self.accumulate = m.batch, m.accumulate
        self.train_batch = self.batch * self.accumulate  # samples per train_step
        self.output_shape = m.output.shape
        self.label_shape = m.labels.shape
        self.label_dtype = np.dtype(m.labels.dtype)
        self.classes = m.classes
        self._param_size = sum(p.words for p in m.params)  # 4-byte words: int8 parameters take a quarter

    def _fn(self, name):
        return getattr(self._lib, f"{self._p}_{name}")

    def _ptr(self, arr: np.ndarray, ctype: str):
        return self._ffi.from_buffer(f"{ctype}[]", arr)  # no copy; much cheaper than arr.ctypes

    def _inputs(self, x, micro_batches: int = 1) -> list[np.ndarray]:
        xs = list(x) if isinstance(x, (tuple, list)) else [x]
        specs = self.manifest.inputs
        if len(xs) != len(specs):
            raise DataError(f"the model takes {len(specs)} inputs, got {len(xs)}")
        out = []
        for arr, spec in zip(xs, specs):
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            shape = spec.shape
            shape = (shape[0] * micro_batches,) + shape[1:] if shape else shape
            if arr.shape != shape:
                raise DataError(f"input '{spec.name}' must have shape {shape}, got {arr.shape}")
            out.append(arr)
        return out

    def check_labels(self, y, count: int | None = None) -> np.ndarray:
        """Labels for `count` samples (default: one batch) as the C expects them, or DataError."""
        y = np.asarray(y)
        shape = self.label_shape if count is None else (count,) + self.label_shape[1:]
        if y.shape != shape:
            raise DataError(f"labels must have shape {shape} for loss '{self.manifest.loss}', "
                            f"got {y.shape}")
        if self.classes is not None and y.size:
            if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= self.classes:
                raise DataError(f"cross_entropy labels must be integers in [0, {self.classes}), "
                                f"got dtype {y.dtype}, range [{y.min()}, {y.max()}]")
        return np.ascontiguousarray(y, dtype=self.label_dtype)

    def train_step(self, x, y) -> float:
        """One batch (train_batch samples): forward, loss, backward, update. Returns the mean loss
        before the update; a refused step (last_status() < 0) returns NaN or the non-finite loss."""
        k = self.accumulate
        xs, y = self._inputs(x, k), self.check_labels(y, self.train_batch if k > 1 else None)
        ctype = "int32_t" if self.label_dtype == np.int32 else "float"
        return float(self._fn("train_step")(*[self._ptr(a, "float") for a in xs], self._ptr(y, ctype)))

    def last_status(self) -> int:
        """What the last train_step did: 0 applied, else a negative code (c_api.STATUS says why)."""
        return int(self._fn("last_status")())

    def predict(self, x) -> np.ndarray:
        xs = self._inputs(x)
        out = np.empty(self.output_shape, np.float32)
        self._fn("predict")(*[self._ptr(a, "float") for a in xs], self._ptr(out, "float"))
        return out

    def get_params(self) -> dict[str, np.ndarray]:
        """{name: array}; a parameter that trains as integers (--update int8) in its dtype."""
        flat = np.empty(self._param_size, np.float32)
        self._fn("get_params")(self._ptr(flat, "float"))
        return split(flat, self.manifest)

    def set_params(self, params: dict[str, np.ndarray]) -> None:
        """Set some or all trainable tensors by name; the others keep their values."""
        current = self.get_params()
        unknown = set(params) - set(current)
        if unknown:
            raise DataError(f"unknown parameter(s) {sorted(unknown)}; trainable: {list(current)}")
        for name, value in params.items():
            if np.shape(value) != current[name].shape:
                raise DataError(f"parameter '{name}' must have shape {current[name].shape}, got {np.shape(value)}")
            current[name] = value
        self._fn("set_params")(self._ptr(np.ascontiguousarray(pack(current, self.manifest.params)), "float"))

    def get_state(self) -> dict[str, np.ndarray]:
        """The state section by name: BatchNorm running statistics (generate --mode train)."""
        flat = np.empty(sum(s.size for s in self.manifest.state), np.float32)
        self._fn("get_state")(self._ptr(flat, "float"))
        return split(flat, self.manifest, self.manifest.state)

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Replace the whole state section (every tensor of get_state, same shapes)."""
        specs = self.manifest.state
        if set(state) != {s.name for s in specs}:
            raise DataError(f"state tensors {sorted(state)}; this model keeps {[s.name for s in specs]}")
        for spec in specs:
            if np.shape(state[spec.name]) != spec.shape:
                raise DataError(f"state '{spec.name}' must have shape {spec.shape}, got {np.shape(state[spec.name])}")
        flat = np.ascontiguousarray(np.concatenate([np.asarray(state[s.name], np.float32).ravel() for s in specs]
                                                   or [np.zeros(0, np.float32)]))
        self._fn("set_state")(self._ptr(flat, "float"))

    def weights(self) -> dict[str, np.ndarray]:
        """What a parameter blob holds, by name: the trainable tensors and the state."""
        return {**self.get_params(), **self.get_state()}

    def set_seed(self, seed: int) -> None:
        """Restart the stream of the training-mode Dropout and of --update int8's rounding (<prefix>_set_seed)."""
        self._fn("set_seed")(seed)

    def set_lr(self, lr: float) -> None:
        self._fn("set_lr")(lr)

    def get_lr(self) -> float:
        return float(self._fn("get_lr")())

    def reset_optimizer(self) -> None:
        self._fn("reset_optimizer")()

    # Lifecycle: the device's blob and delta messages (codegen/blob.py), produced by the C itself.
    def _message(self, fn: str, size: int, *args) -> bytes:
        buf = self._ffi.new("uint8_t[]", size)
        written = self._fn(fn)(buf, size, *args)
        assert written == size, f"{fn} returned {written}"
        return bytes(self._ffi.buffer(buf, size))

    def _load(self, fn: str, data: bytes) -> None:
        data = bytes(data)
        code = self._fn(fn)(self._ffi.from_buffer("uint8_t[]", data), len(data))
        if code:
            check(data, self.manifest, (PARAMS,))  # raises with the field at fault
            raise DataError(f"parameter blob refused by the C code ({CODES.get(code, code)})")

    def save_params(self) -> bytes:
        """The trainable weights as a parameter blob (what <prefix>_save_params writes)."""
        return self._message("save_params", sizes(self.manifest)[PARAMS])

    def load_params(self, data: bytes) -> None:
        """Load a parameter blob; a refused one raises DataError and changes nothing."""
        self._load("load_params", data)

    def begin_round(self) -> None:
        """Start a federated round at the current weights."""
        self._fn("fl_begin_round")()

    def set_prox_mu(self, mu: float) -> None:
        """FedProx's mu for the updates of this round on (<prefix>_set_prox_mu; 0 = off)."""
        self._fn("set_prox_mu")(mu)

    def delta(self, samples: int, int8: bool = False) -> bytes:
        """The round's delta message (current - round start, with `samples` for FedAvg)."""
        return self._message("fl_delta", sizes(self.manifest)[delta_kind(self.manifest, int8)], samples, int(int8))

    def apply_global(self, data: bytes) -> None:
        """Load a global-model blob and start a new round from it (optimizer state cleared)."""
        self._load("fl_apply_global", data)

    def export_onnx(self, path: str | Path) -> None:
        """The source ONNX model with the current weights: an inference model for any runtime."""
        export_onnx(self.build_dir, self.weights(), Path(path))


def load_host(build_dir: str | Path, extra_cflags: list[str] | None = None,
              progress: Progress = nullcontext) -> HostTrainer:
    return HostTrainer(build_dir, extra_cflags, progress)
