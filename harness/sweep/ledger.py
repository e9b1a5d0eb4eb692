"""Bookkeeping files in <results>/jobs/: the plan, the driver's submissions, and the state file each
job writes itself (all JSON, so `lamp-bench status` works from any process)."""
from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.executors import JobOutcome, JobSpec, episode_triples, run_job
from lamp_bench.harness.suite import Episode
from lamp_bench.harness.sweep.planning import PlannedJob, SweepPlan, job_key
from lamp_bench.harness.sweep.schema import Cell


def jobs_dir(out: str | Path) -> Path:
    return Path(out) / "jobs"


def _write_json(path: Path, data: Any) -> None:
    """Atomic replace, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def entry_episodes(entry: Mapping[str, Any]) -> list[Episode]:
    """The episodes of a bookkeeping entry (a submission, a worker state file)."""
    return [Episode(entry["suite"], t, i, s) for t, i, s in entry["episodes"]]


def write_plan(plan: SweepPlan) -> Path:
    path = jobs_dir(plan.results_dir) / "plan.json"
    _write_json(path, {
        "name": plan.name, "source": plan.source, "written_at": _now(),
        "cells": [asdict(c) for c in plan.cells],
        "jobs": [{"key": j.key, "cell": j.cell, "episodes": episode_triples(j.spec.episodes)} for j in plan.jobs],
    })
    return path


def read_plan(out: str | Path) -> SweepPlan:
    path = jobs_dir(out) / "plan.json"
    data = read_json(path)
    if data is None:
        raise ConfigError(f"{out} holds no sweep plan ({path} is missing): was it written by `lamp-bench sweep`?")
    cells = [Cell(**{**c, "tables": tuple(c["tables"]), "seeds": tuple(c["seeds"]),
                     "tasks": None if c["tasks"] is None else tuple(c["tasks"])}) for c in data["cells"]]
    jobs = []
    for j in data["jobs"]:
        cell = cells[j["cell"]]
        episodes = [Episode(cell.suite, t, i, s) for t, i, s in j["episodes"]]
        jobs.append(PlannedJob(j["key"], j["cell"], cell.job_spec(episodes, out)))
    return SweepPlan(data["name"], data["source"], Path(out), cells, jobs)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Ledger:
    """The driver's record of submissions (one writer: the `lamp-bench sweep` process)."""

    def __init__(self, out: str | Path):
        self.path = jobs_dir(out) / "submissions.json"
        self.entries: list[dict[str, Any]] = read_json(self.path, [])

    def add(self, key: str, spec: JobSpec, executor: str, job_id: str | None, attempt: int = 0) -> dict[str, Any]:
        """A submission: the job's spec (JobSpec.to_dict, label resolved) and where and when it went."""
        entry = {"key": key, **spec.to_dict(), "label": spec.run_label, "executor": executor, "job_id": job_id,
                 "attempt": attempt, "submitted_at": _now(), "host": socket.gethostname(), "driver_pid": os.getpid(),
                 "outcome": None, "error": None}
        self.entries.append(entry)
        return entry

    def save(self) -> None:
        _write_json(self.path, self.entries)

    @staticmethod
    def spec(entry: Mapping[str, Any], out: str | Path) -> JobSpec:
        """The JobSpec a submission ran (to follow a job an earlier driver submitted)."""
        return JobSpec.from_dict(entry, results_dir=str(out))


class TrackedJob:
    """The function every executor runs for a sweep job: `run_job` plus a state file the job writes
    itself (workers/<key>.json), so `lamp-bench status` can tell running jobs from queued ones."""

    def __init__(self, results_dir: str | Path):
        self.results_dir = str(results_dir)

    def __call__(self, spec: JobSpec, should_stop: Callable[[], bool] = lambda: False,
                 on_record: Callable[[dict[str, Any]], None] | None = None) -> JobOutcome:
        key = job_key(spec)
        path = jobs_dir(self.results_dir) / "workers" / f"{key}.json"
        slurm_id = os.environ.get("SLURM_JOB_ID")
        if os.environ.get("SLURM_ARRAY_JOB_ID"):
            slurm_id = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        state = {"key": key, "label": spec.run_label, "suite": spec.suite, "episodes": episode_triples(spec.episodes),
                 "host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": slurm_id,
                 "restarts": int(os.environ.get("SLURM_RESTART_COUNT", "0")), "started_at": _now()}
        _write_json(path, {**state, "state": "running"})
        try:
            outcome = run_job(spec, should_stop=should_stop, on_record=on_record)
        except BaseException as error:  # SystemExit from a requeue too: the job is not running any more
            _write_json(path, {**state, "state": "failed" if isinstance(error, Exception) else "stopped",
                               "error": f"{type(error).__name__}: {error}", "ended_at": _now()})
            raise
        _write_json(path, {**state, "state": "stopped" if outcome.stopped_early else "finished",
                           "outcome": asdict(outcome), "ended_at": _now()})
        return outcome

