"""The benchmark command's quick mode runs end to end and prints its tables (no timing asserts:
performance claims come from full runs of benchmarks/run.py, not from tests)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_prints_the_tables(tmp_path):
    out = tmp_path / "bench.md"
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| model | batch | FLOP/step | C µs |" in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith("| mlp |")]
    assert len(rows) >= 2, done.stdout
    assert out.read_text().startswith("Host training step")
