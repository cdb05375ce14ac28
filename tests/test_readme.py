"""The README stays true: its quick-start command works and it lists every supported op."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

from codegen import ops
from codegen.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_lists_every_supported_op():
    section = README.split("<!-- ops -->")[1].split("<!-- /ops -->")[0]
    listed = set(re.findall(r"\b[A-Z][A-Za-z0-9]+\b", section))  # ReduceL2
    assert not set(ops.supported_ops()) - listed


def test_quick_start_runs(tmp_path, monkeypatch):
    """The first quick-start line, minus the pip install, through the CLI."""
    line = next(l for l in README.splitlines() if l.startswith("pip install"))
    monkeypatch.chdir(ROOT)
    for command in line.split(" && ")[1:]:
        args = shlex.split(command.replace("build/digits", str(tmp_path / "digits")))
        assert args[0] == "mcutrain"
        result = CliRunner().invoke(app, args[1:])
        assert result.exit_code == 0, result.output
    last_epoch = result.output.strip().splitlines()[-1]
    accuracy = float(re.search(r"accuracy ([\d.]+)%", last_epoch)[1])
    print(last_epoch)
    assert accuracy > 85


def test_example_script(tmp_path):
    import runpy

    module = runpy.run_path(str(ROOT / "examples" / "digits" / "train_digits.py"))
    before, after = module["main"](epochs=2, out_dir=str(tmp_path / "ex"))
    assert after > 0.85 > before


def test_figures_are_current():
    """The deterministic figures in the prose come from benchmarks/readme_figures.py (the board
    figures where the cross toolchains and QEMU are installed, as in CI)."""
    from benchmarks import readme_figures

    _, problems = readme_figures.stale(README, readme_figures.boards_available())
    assert not problems, "\n".join(problems) + "\nrun: python -m benchmarks.readme_figures --write"
