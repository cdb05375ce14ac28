"""The memory report of a generated folder (`mcutrain report`): sizes, lower bound, the live
memory timeline, and an optional plot of it (matplotlib, the `plot` extra)."""
from __future__ import annotations

import io
import json
from pathlib import Path

from .manifest import read as read_manifest
from .errors import OptionError
from .files import write_atomic


def memory_report(build_dir: str | Path) -> dict:
    """Everything `report --json` prints: the manifest's memory section plus the plan's timeline."""
    manifest = read_manifest(build_dir)
    plan = json.loads((Path(build_dir) / "memory.json").read_text())
    live = plan["live_bytes"]
    return {**manifest.memory, "name": manifest.name, "steps": plan["steps"],
            "peak_step": live.index(max(live)) if live else 0, "live_bytes": live,
            "placement_order": plan["placement_order"], "buffers": plan["buffers"]}


def plot_timeline(report: dict, path: Path) -> None:
    """Live bytes per schedule step, the peak marked; PNG or SVG by the file's suffix."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise OptionError("plotting needs matplotlib: pip install 'mcutrain[plot]'") from None
    if path.suffix.lower() not in (".png", ".svg"):
        raise OptionError(f"--plot '{path}': use a .png or .svg file name")
    live, peak = report["live_bytes"], report["peak_step"]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.step(range(len(live)), live, where="post", label="live activation + gradient bytes")
    ax.axhline(report["arena_bytes"], color="tab:red", linestyle="--", label=f"arena {report['arena_bytes']:,} B")
    ax.plot([peak], [live[peak]], "o", color="tab:red")
    ax.annotate(f"peak {live[peak]:,} B", (peak, live[peak]), textcoords="offset points", xytext=(6, 6))
    ax.set_xlabel("schedule step (forward, loss, backward + updates)")
    ax.set_ylabel("bytes")
    ax.set_title(f"{report['name']}: arena memory over one training step")
    ax.legend(loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix[1:].lower())
    plt.close(fig)
    write_atomic(path, buf.getvalue())
