"""`mcutrain build --library`: the generated trainer as a drop-in library (CMake subdirectory and
PlatformIO library.json), plus a CMake toolchain file for cross targets. The application keeps
its own startup, linker script and data collection; it only calls the C API."""
from __future__ import annotations

from pathlib import Path

from . import __version__, targets
from .manifest import read as read_manifest
from .ctext import ENV
from .files import write_all


def default_dir(build_dir: Path, target: targets.Target, name: str) -> Path:
    return Path(build_dir) / target.name / "library" / name


def build_library(build_dir: str | Path, target_name: str, out: str | Path | None = None) -> Path:
    """Write the library folder (default BUILD_DIR/<target>/library/<name>); returns its path."""
    folder = Path(build_dir)
    m = read_manifest(folder)
    target = targets.load(target_name)
    name = m.name
    dest = Path(out) if out else default_dir(folder, target, name)
    ctx = {"name": name, "version": __version__, "target": target}
    files = {f"src/{rel}": (folder / rel).read_bytes() for rel in m.c_files}
    files["CMakeLists.txt"] = ENV.get_template("lib_CMakeLists.txt.j2").render(ctx)
    files["library.json"] = ENV.get_template("lib_library.json.j2").render(ctx)
    if target.qemu:  # a cross target: the application needs its compiler and CPU flags
        files[f"toolchain-{target.name}.cmake"] = ENV.get_template("lib_toolchain.cmake.j2").render(ctx)
    write_all(dest, files)
    return dest
