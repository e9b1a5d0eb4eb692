"""The report's tables as data: sections of tables of rows, filled by the layouts and drawn by render."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Delta:
    """Measured minus published (percentage points for rates); `inside`: the published value lies in the
    measured 95% interval (True where there is no interval)."""

    value: float
    inside: bool
    digits: int = 1
    suffix: str = ""


@dataclass
class Row:
    name: str
    kind: str  # measured | paper | delta | difference | profile
    cells: list[Any]  # Cell | Delta | stats.Difference | float | None, one per column
    label: str | None = None
    ref: str | None = None  # key of the matching paper row (paper method, or ablation level)


@dataclass
class Table:
    key: str
    title: str
    stub: str  # header of the row-name column
    columns: list[str]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)


@dataclass
class Section:
    key: str
    title: str
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    plot: str = "bars"  # bars | steps | latency


@dataclass(frozen=True)
class RowSpec:
    name: str
    where: dict[str, Any]
    label: str | None = None
    ref: str | None = None
    missing: str | None = None  # why the row has no episodes at all
    group: str | None = None  # rows are tested only against the reference of the same group (backend)

