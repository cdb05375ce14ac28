"""Safe .npz reading (training data, parameter files). An .npz is a zip of .npy files: names come
from the zip directory and each member's dtype and shape from its .npy header, all checked before
any array data is decompressed, so a crafted file can neither unpickle objects nor make us
allocate gigabytes for a few bytes on disk. Every problem is a DataError naming file and array."""
from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

from .errors import DataError

MAX_BYTES = 4 << 30  # default cap on one array's data: far above any data set a trainer fits
NUMERIC = "biuf"  # dtype kinds read: bool, signed and unsigned integers, floats
_HEADERS = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
# What reading a damaged member can raise (zip, deflate, .npy header/length, encrypted member).
_BROKEN = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError, RuntimeError, OSError)


class Archive:
    """An open .npz: `names` from the zip directory alone; `array` reads one member after checking
    its header. `what` describes the file the caller expects, for the not-a-zip message."""

    def __init__(self, path: Path, what: str):
        self.path = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"'{self.path}' is not {what} ({e})") from None
        self.names = {i.filename[:-4] for i in self._zip.infolist() if i.filename.endswith(".npy")}

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc) -> None:
        self._zip.close()

    def array(self, name: str, shape: tuple[int, ...] | None = None, max_bytes: int = MAX_BYTES) -> np.ndarray:
        """Member `name` (of `shape` if given): numeric, and no more data than the zip entry holds
        and `max_bytes` allows; decompressed only once all of that holds."""
        info = self._zip.getinfo(name + ".npy")
        try:
            with self._zip.open(info) as f:
                self._check(name, *self._header(name, f), info.file_size - f.tell(), shape, max_bytes)
            with self._zip.open(info) as f:
                return npy.read_array(f, allow_pickle=False)
        except _BROKEN as e:
            raise self._refuse(name, f"cannot be read ({e})") from None

    def _header(self, name: str, f) -> tuple[tuple[int, ...], np.dtype]:
        version = npy.read_magic(f)
        if version not in _HEADERS:
            raise self._refuse(name, f"uses .npy format version {version}; save it with numpy.savez")
        shape, _, dtype = _HEADERS[version](f)
        return shape, dtype

    def _check(self, name: str, shape: tuple[int, ...], dtype: np.dtype, available: int,
               expected: tuple[int, ...] | None, max_bytes: int) -> None:
        if dtype.kind not in NUMERIC:
            raise self._refuse(name, f"has dtype '{dtype}'; only bool, integer and float arrays are read "
                               "(save numbers, not strings or objects)")
        if expected is not None and shape != tuple(expected):
            raise self._refuse(name, f"has shape {shape}, expected {tuple(expected)}")
        if any(n < 0 for n in shape):
            raise self._refuse(name, f"declares a negative dimension in shape {shape}")
        declared = math.prod(shape) * dtype.itemsize
        if declared > available:
            raise self._refuse(name, f"declares {declared:,} bytes of data but its zip entry holds "
                               f"{available:,}: the file is truncated or crafted")
        if declared > max_bytes:
            raise self._refuse(name, f"declares {declared:,} bytes of data, more than the {max_bytes:,} "
                               "allowed: split the data set")

    def _refuse(self, name: str, why: str) -> DataError:
        return DataError(f"'{self.path}': array '{name}' {why}")
