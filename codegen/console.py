"""What the `mcutrain` commands print, shared by cli.py, cli_boards.py and cli_lifecycle.py:
results on stdout; errors and progress (spinners, bars) on stderr, so piped results stay clean.
`-q` silences progress and notes (what was written where), never results or errors."""
from __future__ import annotations

import warnings
from functools import partial

import typer
from rich.console import Console
from rich.progress import Progress
from rich.status import Status
from rich.table import Table
from rich.text import Text

from .errors import McutrainError, McutrainWarning

out = Console()
err = Console(stderr=True)
_progress = Console(stderr=True)
say = partial(out.print, soft_wrap=True, highlight=False)


def configure(quiet: bool) -> None:
    """Once per invocation (tests run many in one process). A new progress console sees this
    run's terminal: a pipe gets no progress unless TTY_INTERACTIVE=1."""
    global _progress
    _progress = Console(stderr=True, quiet=quiet)


def note(text: str) -> None:
    """Output a script does not need (what was written where): silenced by -q, like progress."""
    if not _progress.quiet:
        say(text)


def status(text: str) -> Status:
    """A spinner saying what long work (a compile, an emulator run) is under way."""
    return _progress.status(text)


def progress_bar() -> Progress:
    """A bar for work counted in steps; it disappears when done."""
    return Progress(console=_progress, transient=True)


def call(fn, *args, **kwargs):
    """fn(*args, **kwargs); a problem the user can fix prints one line and exits with code 2, a
    McutrainWarning one line starting 'warning:'."""
    try:
        with warnings.catch_warnings():
            warnings.showwarning = partial(_show, warnings.showwarning)
            warnings.simplefilter("always", McutrainWarning)  # every run's, not once per process
            return fn(*args, **kwargs)
    except McutrainError as e:
        err.print(Text.assemble(("error:", "bold red"), " ", printable(str(e))), highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _show(default, message, category, *args, **kwargs) -> None:
    if not issubclass(category, McutrainWarning):
        return default(message, category, *args, **kwargs)
    err.print(Text.assemble(("warning:", "bold yellow"), " ", printable(str(message))), highlight=False,
              soft_wrap=True)


def printable(text: str) -> str:
    """Names from a model file are shown as text: no rich markup, no terminal control characters."""
    return "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in text)


def kib(n: int) -> str:
    return f"{n:,} B ({n / 1024:.1f} KiB)"


def print_memory(summary: dict) -> None:
    mem = summary["memory"]
    table = Table(title="memory", show_header=False)
    table.add_row("arena (activations + gradients, shared)", kib(mem["arena_bytes"]))
    if "lower_bound_bytes" in mem:
        table.add_row("  lower bound (peak of live bytes)", kib(mem["lower_bound_bytes"]))
    table.add_row("  without reuse (every buffer separate)", kib(mem["naive_bytes"]))
    table.add_row("trainable parameters (RAM)", kib(mem["param_bytes"]))
    table.add_row("optimizer state (RAM)", kib(mem["optimizer_state_bytes"]))
    if mem.get("running_stats_bytes"):
        table.add_row("BatchNorm running statistics (RAM)", kib(mem["running_stats_bytes"]))
    if mem.get("round_start_bytes"):
        table.add_row("federated round-start copy (RAM)", kib(mem["round_start_bytes"]))
    table.add_row("frozen parameters (const, flash)", kib(mem["frozen_bytes"]))
    table.add_row("other constants (const, flash)", kib(mem["const_bytes"]))
    out.print(table)
