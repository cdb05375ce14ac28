"""mcutrain.json, the manifest of a build folder. `generate` writes it last, with the format
version and a SHA-256 of every file it wrote, so a folder that mixes two generations (a run
killed between files, a hand edit) is refused before anything builds, loads or exports it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .errors import OptionError

NAME = "mcutrain.json"
FORMAT = 1  # bump on any change of the fields; readers refuse versions they do not know


def _sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _self_hash(fields: dict) -> str:
    return _sha256(json.dumps(fields, sort_keys=True))


def dumps(summary: dict, files: dict[str, bytes | str]) -> str:
    """The manifest text for `summary`, vouching for `files` (relative path -> content)."""
    fields = {"format": FORMAT, **summary, "files": {rel: _sha256(data) for rel, data in files.items()}}
    return json.dumps({**fields, "manifest_sha256": _self_hash(fields)}, indent=1)


def read(build_dir: str | Path) -> dict:
    """The manifest of a consistent build folder; OptionError naming what is wrong otherwise."""
    folder = Path(build_dir)
    path = folder / NAME
    if not path.is_file():
        raise OptionError(f"'{build_dir}' is not a generated build folder (no {NAME}); "
                          "run `mcutrain generate` first")
    fields = _parse(path)
    for rel, digest in fields["files"].items():
        src = folder / rel
        if not src.is_file() or _sha256(src.read_bytes()) != digest:
            raise OptionError(f"'{src}' {'is missing' if not src.is_file() else 'does not match'} {path} "
                              "(an interrupted or mixed `mcutrain generate`, or an edited file): "
                              "run `mcutrain generate` again")
    return fields


def _parse(path: Path) -> dict:
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
    return fields
