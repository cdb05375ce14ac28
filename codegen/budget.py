"""--ram-budget: refuse a plan whose static RAM does not fit, saying what takes the memory and
which options would cut it (each alternative is planned for real, not guessed)."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from . import training
from .errors import FitError, McutrainError


def ram_bytes(mem: dict) -> int:
    """Static RAM of the trainer: arena + trainable parameters + optimizer state (+ the
    round-start copy of a federated build, + the running statistics of --mode train)."""
    return (mem["arena_bytes"] + mem["param_bytes"] + mem["optimizer_state_bytes"] + mem.get("round_start_bytes", 0)
            + mem.get("running_stats_bytes", 0))


def _alternatives(spec) -> dict[str, object]:
    sel, opt = spec.selection, spec.optimizer
    alts = {"--train-last 1": replace(spec, selection=replace(sel, last=1)),
            "--train-bias-only": replace(spec, selection=replace(sel, bias_only=True))}
    if opt.kind != "sgd" or opt.momentum:
        alts["--optimizer sgd (no momentum: no state, updates fused)"] = replace(
            spec, optimizer=training.Optimizer(opt.lr, weight_decay=opt.weight_decay), fuse_updates=True)
    return alts


def check(budget: int, summary: dict, memory_of: Callable, spec, other: dict[str, Callable] | None = None) -> None:
    """other: more alternatives, flag -> () -> memory summary (e.g. int8 frozen layers)."""
    mem = summary["memory"]
    need = ram_bytes(mem)
    if need <= budget:
        return
    lines = [f"the trainer needs {need:,} B of RAM but --ram-budget is {budget:,} B: arena "
             f"{mem['arena_bytes']:,} B (activations and gradients at the peak), trainable parameters "
             f"{mem['param_bytes']:,} B, optimizer state {mem['optimizer_state_bytes']:,} B"
             + (f", federated round-start copy {mem['round_start_bytes']:,} B (--no-federated drops it)."
                if mem.get("round_start_bytes") else ".")]
    options = []
    alternatives = {flag: lambda alt=alt: memory_of(alt) for flag, alt in _alternatives(spec).items()}
    for flag, memory in {**alternatives, **(other or {})}.items():
        try:
            total = ram_bytes(memory())
        except McutrainError:
            continue
        if total < need:
            options.append(f"{flag}: {total:,} B{' (fits)' if total <= budget else ''}")
    if options:
        lines.append("Options that cut it: " + "; ".join(options) + ".")
    lines.append("A smaller --batch (with --accumulate K to keep the effective batch) shrinks the arena.")
    raise FitError(" ".join(lines))
