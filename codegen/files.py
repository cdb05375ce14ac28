"""Output files written as a set: a failed or interrupted run never leaves a half-written file,
and a full disk leaves the earlier output as it was."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from .errors import OutputError


def write_atomic(path: Path, data: bytes | str) -> None:
    write_all(Path(path).parent, {Path(path).name: data})


def write_all(out_dir: Path, files: dict[str, bytes | str]) -> None:
    """Write every file in full beside its destination first (a full disk fails here, before
    anything is replaced), then rename them into place in the given order: a caller puts the
    file that vouches for the others (the manifest) last. Files get the usual umask permissions."""
    out_dir = Path(out_dir)
    created = [d for d in [out_dir, *out_dir.parents] if not d.exists()]
    staged: list[tuple[Path, Path]] = []
    try:
        for rel, data in files.items():
            dest = out_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            staged.append((_stage(dest, data.encode() if isinstance(data, str) else data), dest))
        for tmp, dest in staged:
            os.replace(tmp, dest)
    except OSError as e:
        _discard([tmp for tmp, _ in staged], created)
        raise OutputError(f"cannot write '{e.filename or out_dir}': {e.strerror or e}; "
                          "earlier output was left as it was") from None
    except BaseException:
        _discard([tmp for tmp, _ in staged], created)
        raise


def _stage(dest: Path, data: bytes) -> Path:
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def _discard(tmps: list[Path], created: list[Path]) -> None:
    """Remove staged files not yet renamed, and folders this run created if they stayed empty."""
    for tmp in tmps:
        tmp.unlink(missing_ok=True)
    for folder in sorted(created, key=lambda p: len(p.parts), reverse=True):
        for sub in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if sub.is_dir() and not any(sub.iterdir()):
                sub.rmdir()
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
