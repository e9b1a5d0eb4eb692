"""Expansion of a sweep into jobs: cells -> the suite's episodes -> chunks of `chunk_size` episodes."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.executors import JobSpec, split_into_jobs
from lamp_bench.harness.registry import SUITES
from lamp_bench.harness.suite import Episode
from lamp_bench.harness.sweep.schema import Cell, Sweep, SweepError
from lamp_bench.harness.sweep.steps import resolve_checkpoint


def job_key(spec: JobSpec) -> str:
    """Stable name of a job: its label, suite and a digest of its episodes."""
    digest = hashlib.sha1(json.dumps([e.key() for e in spec.episodes]).encode()).hexdigest()[:10]
    return f"{spec.run_label}.{spec.suite}.{digest}"


@dataclass
class PlannedJob:
    key: str
    cell: int  # index into SweepPlan.cells
    spec: JobSpec


@dataclass
class SweepPlan:
    name: str
    source: str
    results_dir: Path
    cells: list[Cell]
    jobs: list[PlannedJob]
    steps: Any = None  # harness.sweep.steps.StepGraph, run before the cells

    def cell_episodes(self) -> list[list[Episode]]:
        out: list[list[Episode]] = [[] for _ in self.cells]
        for job in self.jobs:
            out[job.cell] += job.spec.episodes
        return out


def plan_sweep(sweep: Sweep, out: str | Path, chunk_size: int | None = None) -> SweepPlan:
    """Enumerate every cell's episodes with its suite and cut them into jobs of `chunk_size` episodes.

    Builds each suite once (cheap: no simulator) to ask it for its tasks and initial states."""
    if chunk_size is not None and chunk_size < 1:
        raise SweepError(f"--chunk-size must be >= 1, got {chunk_size}")
    out = Path(out)
    suites: dict[str, Any] = {}
    cells = [replace(c, policy_kwargs=resolve_checkpoint(c.policy_kwargs, out, sweep.steps)) for c in sweep.cells(chunk_size)]
    jobs: list[PlannedJob] = []
    for index, cell in enumerate(cells):
        cache_key = json.dumps([cell.suite, cell.suite_kwargs], sort_keys=True, default=str)
        try:
            if cache_key not in suites:
                suites[cache_key] = SUITES.build(cell.suite, **cell.suite_kwargs)
            suite = suites[cache_key]
            episodes = [e for seed in cell.seeds for e in suite.episodes(cell.tasks, cell.episodes_per_task, seed)]
        except (TypeError, ValueError, ConfigError) as error:
            raise SweepError(f"{sweep.path}: cell {cell.name} (tables {', '.join(cell.tables)}): {error}") from None
        spec = cell.job_spec(episodes, out)
        n_jobs = -(-len(episodes) // cell.chunk_size)
        for chunk in split_into_jobs(spec, n_jobs):
            jobs.append(PlannedJob(job_key(chunk), index, chunk))
    return SweepPlan(sweep.name, str(sweep.path), out, cells, jobs, sweep.steps)
