"""mcutrain.json, the manifest of a build folder. `generate` writes it last, with the format
version and a SHA-256 of every file it wrote, so a folder that mixes two generations (a run
killed between files, a hand edit) is refused before anything builds, loads or exports it."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import OptionError

NAME = "mcutrain.json"
FORMAT = 3  # 2: state; 3: params' dtype. Bump on any change of the fields; readers refuse versions they do not know


def words(dtype: str, size: int) -> int:
    """The 4-byte words a tensor takes in the parameter blob: one per float32 or int32 value, four
    int8 values to a word (the integer parameters of generate --update int8)."""
    return size if dtype != "int8" else (size + 3) // 4


@dataclass(frozen=True)
class Spec:
    """A named tensor of the trainer's interface."""
    name: str
    shape: tuple[int, ...]
    dtype: str = field(default="float32", kw_only=True)  # int8/int32: a parameter that trains as integers

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def words(self) -> int:
        return words(self.dtype, self.size)


@dataclass(frozen=True)
class Input(Spec):
    c: str  # the C name of its pointer argument


@dataclass(frozen=True)
class Labels:
    shape: tuple[int, ...]
    dtype: str  # "int32": class indices (cross_entropy); "float32": targets

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class Manifest:
    """What a build folder holds, as `generate` recorded it (api._summary writes the fields)."""
    name: str  # the C prefix
    source: str
    loss: str
    accumulate: int
    optimizer: dict
    inputs: tuple[Input, ...]
    output: Spec
    labels: Labels
    params: tuple[Spec, ...]  # the trainable tensors, in parameter-blob order
    state: tuple[Spec, ...]  # the blob's state section (running statistics), in order
    frozen: tuple[str, ...]
    memory: dict[str, int]
    federated: bool
    model_hash: int
    files: dict[str, str]  # relative path -> SHA-256 of what generate wrote

    @property
    def batch(self) -> int:
        """Samples per predict call and per micro-batch."""
        return self.inputs[0].shape[0] if self.inputs[0].shape else 1

    @property
    def classes(self) -> int | None:
        """Classes of a cross_entropy output (batch, classes); None for other losses."""
        return self.output.shape[1] if self.loss == "cross_entropy" else None

    @property
    def c_files(self) -> list[str]:
        """What compiling the trainer reads: sources, headers and the data files they include or
        embed (relative paths, all verified by read())."""
        return sorted(rel for rel in self.files if rel.endswith((".c", ".h", ".inc", ".bin")))

    @classmethod
    def from_json(cls, d: dict) -> "Manifest":
        return cls(name=d["name"], source=d["source"], loss=d["loss"], accumulate=d["accumulate"],
                   optimizer=d["optimizer"], inputs=tuple(_typed(Input, i) for i in d["inputs"]),
                   output=_typed(Spec, d["output"]), labels=_typed(Labels, d["labels"]),
                   params=tuple(_typed(Spec, p) for p in d["params"]),
                   state=tuple(_typed(Spec, p) for p in d["state"]), frozen=tuple(d["frozen"]), memory=d["memory"],
                   federated=d["federated"], model_hash=d["model_hash"], files=d["files"])


def _typed(kind, fields: dict):
    return kind(**{**fields, "shape": tuple(fields["shape"])})


def _sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _self_hash(fields: dict) -> str:
    return _sha256(json.dumps(fields, sort_keys=True))


def dumps(summary: dict, files: dict[str, bytes | str]) -> str:
    """The manifest text for `summary`, vouching for `files` (relative path -> content)."""
    fields = {"format": FORMAT, **summary, "files": {rel: _sha256(data) for rel, data in files.items()}}
    return json.dumps({**fields, "manifest_sha256": _self_hash(fields)}, indent=1)


def read(build_dir: str | Path) -> Manifest:
    """The manifest of a consistent build folder; OptionError naming what is wrong otherwise."""
    folder = Path(build_dir)
    path = folder / NAME
    if not path.is_file():
        raise OptionError(f"'{build_dir}' is not a generated build folder (no {NAME}); "
                          "run `mcutrain generate` first")
    fields = _parse(path)
    for rel, digest in fields.files.items():
        src = folder / rel
        if not src.is_file() or _sha256(src.read_bytes()) != digest:
            raise OptionError(f"'{src}' {'is missing' if not src.is_file() else 'does not match'} {path} "
                              "(an interrupted or mixed `mcutrain generate`, or an edited file): "
                              "run `mcutrain generate` again")
    return fields


def _parse(path: Path) -> Manifest:
    try:
        fields = json.loads(path.read_bytes())
        stated = fields.pop("manifest_sha256")
        version = fields["format"]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise OptionError(f"{path} is corrupt or from an older mcutrain: run `mcutrain generate` again") from None
    if version != FORMAT:
        raise OptionError(f"{path} has format version {version!r}; this mcutrain reads version {FORMAT}: "
                          "run `mcutrain generate` again")
    if stated != _self_hash(fields):
        raise OptionError(f"{path} is corrupt (its checksum does not match; edited by hand?): "
                          "run `mcutrain generate` again")
    return Manifest.from_json(fields)
