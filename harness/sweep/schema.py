"""Sweep schema: the parsed form of a sweep file (policies, suites, tables, settings) and its cells."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.executors import JobSpec
from lamp_bench.harness.suite import Episode

DEFAULT_CHUNK_SIZE = 100  # episodes per job; see benchmarks/results/scheduling_overhead.md
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class SweepError(ConfigError):
    """A sweep file that cannot be used; the message names the file, the table and the key."""


# ----------------------------------------------------------------------------------------------
# Schema


@dataclass(frozen=True)
class PolicyEntry:
    label: str
    policy: str
    checkpoint: str | None = None  # expanded, absolute
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build_kwargs(self) -> dict[str, Any]:
        return {**self.kwargs, **({"checkpoint": self.checkpoint} if self.checkpoint else {})}


@dataclass(frozen=True)
class Settings:
    """What a table, a suite entry or the [sweep] defaults may set; None = not set at this level."""

    tasks: tuple[int, ...] | None = None  # () means all tasks
    episodes_per_task: int | None = None
    seeds: tuple[int, ...] | None = None
    envs_per_worker: int | None = None
    chunk_size: int | None = None

    def over(self, base: "Settings") -> "Settings":
        return Settings(**{k: v if v is not None else getattr(base, k) for k, v in asdict(self).items()})


@dataclass(frozen=True)
class SuiteEntry:
    key: str
    suite: str
    settings: Settings
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TableEntry:
    name: str
    description: str
    policies: tuple[str, ...]
    suites: tuple[str, ...]
    settings: Settings


@dataclass(frozen=True)
class Cell:
    """One label on one suite with all settings resolved: the unit of `lamp-bench status`."""

    label: str
    policy: str
    suite: str
    tables: tuple[str, ...]
    policy_kwargs: Mapping[str, Any]
    suite_kwargs: Mapping[str, Any]
    tasks: tuple[int, ...] | None  # None = all of the suite's tasks
    episodes_per_task: int | None  # None = the suite's protocol
    seeds: tuple[int, ...]
    envs_per_worker: int
    chunk_size: int

    @property
    def name(self) -> str:
        return f"{self.label}/{self.suite}"

    def identity(self) -> dict[str, Any]:
        """Everything that decides which episodes run and how; two tables sharing a cell must agree."""
        return {k: v for k, v in asdict(self).items() if k != "tables"}

    def job_spec(self, episodes: list[Episode], out: str | Path) -> JobSpec:
        """The job that runs `episodes` of this cell into the results directory `out`."""
        return JobSpec(policy=self.policy, suite=self.suite, episodes=episodes, results_dir=str(out),
                       label=self.label, policy_kwargs=dict(self.policy_kwargs), suite_kwargs=dict(self.suite_kwargs),
                       envs_per_worker=self.envs_per_worker)


@dataclass(frozen=True)
class Sweep:
    path: Path
    name: str
    description: str
    policies: Mapping[str, PolicyEntry]
    suites: Mapping[str, SuiteEntry]
    tables: Mapping[str, TableEntry]
    defaults: Settings
    steps: Any = None  # harness.sweep.steps.StepGraph: [demos.*] and [train.*] steps, if any

    def cells(self, chunk_size: int | None = None) -> list[Cell]:
        """Label x suite cells in table order; a cell shared by several tables appears once."""
        cells: dict[tuple[str, str], Cell] = {}
        for table in self.tables.values():
            for label in table.policies:
                entry = self.policies[label]
                for key in table.suites:
                    suite = self.suites[key]
                    s = table.settings.over(suite.settings).over(self.defaults)
                    cell = Cell(
                        label=label, policy=entry.policy, suite=suite.suite, tables=(table.name,),
                        policy_kwargs=entry.build_kwargs(), suite_kwargs=dict(suite.kwargs),
                        tasks=s.tasks or None, episodes_per_task=s.episodes_per_task, seeds=s.seeds or (0,),
                        envs_per_worker=s.envs_per_worker or 1,
                        chunk_size=chunk_size or s.chunk_size or DEFAULT_CHUNK_SIZE,
                    )
                    known = cells.get((label, suite.suite))
                    if known is None:
                        cells[(label, suite.suite)] = cell
                    elif known.identity() != cell.identity():
                        diff = sorted(k for k, v in cell.identity().items() if known.identity()[k] != v)
                        raise SweepError(
                            f"{self.path}: [tables.{table.name}] runs {label!r} on {suite.suite!r} with other "
                            f"{', '.join(diff)} than [tables.{known.tables[0]}]; episodes are stored by label and "
                            f"suite, so give one of them another label (a new [policies.<label>] table)"
                        )
                    else:
                        cells[(label, suite.suite)] = replace(known, tables=known.tables + (table.name,))
        return list(cells.values())

