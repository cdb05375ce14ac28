"""What `mcutrain inspect` reports, as one typed, versioned schema: `api.inspect` fills it, the
CLI prints it, `--json` writes `to_json()`. Later features (int8 alternatives, sparse-update
proposals) add fields here, bumping SCHEMA."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA = 2  # the "schema" field of `inspect --json`; 2: ram_budget, schemes


@dataclass
class NodeRow:
    op: str
    domain: str
    name: str
    outputs: list[str]
    supported: bool
    shapes: list[list[int] | None] = field(default_factory=list)  # per output, once shapes are known


@dataclass
class ChoiceRow:
    """The RAM one trainable set costs (the memory section of the manifest), or why it cannot be."""
    choice: str  # e.g. "full training", "--train-last 1", "your choice"
    memory: dict[str, int] | None = None
    error: str | None = None
    options: str | None = None  # the command-line options that make "your choice"

    def to_json(self) -> dict:
        extra = {k: v for k, v in (("error", self.error), ("options", self.options)) if v is not None}
        return {"choice": self.choice, **(self.memory or {}), **extra}


@dataclass
class SchemeRow:
    """A sparse update scheme that fits --ram-budget (codegen/sparse_schemes.py): the options that
    make it, its RAM (budget.ram_bytes of its memory summary) and its accuracy-proxy score."""
    options: str
    ram_bytes: int
    score: float
    proxy: str  # "contribution analysis" (measured) or "heuristics"
    memory: dict[str, int]
    spec: Any = None  # the api.Spec it makes with the user's other options (not in the JSON)

    def to_json(self) -> dict:
        return {"options": self.options, "ram_bytes": self.ram_bytes, "score": self.score, "proxy": self.proxy,
                **self.memory}


@dataclass
class Report:
    opset: int
    nodes: list[NodeRow]
    supported_ops: list[str]
    unsupported: list[str]  # op types without an implementation (empty: the model compiles)
    inputs: dict[str, list[int]] = field(default_factory=dict)
    outputs: dict[str, list[int]] = field(default_factory=dict)
    params: list[dict] = field(default_factory=list)  # {"name", "shape"} of every float parameter
    loss: str | None = None  # the loss the estimates assume (single-output models only)
    optimizer: dict | None = None
    federated: bool = True
    memory_by_choice: list[ChoiceRow] = field(default_factory=list)
    note: str | None = None
    ram_budget: int | None = None  # inspect --ram-budget: the budget the schemes fit
    schemes: list[SchemeRow] = field(default_factory=list)  # best first

    def to_json(self) -> dict:
        d = {**asdict(self), "memory_by_choice": [row.to_json() for row in self.memory_by_choice],
             "schemes": [row.to_json() for row in self.schemes]}
        return {"schema": SCHEMA, **{k: v for k, v in d.items() if v is not None}}
