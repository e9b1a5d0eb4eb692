"""Sweeps: experiments described as policies x suites x settings in a TOML file, fanned out as jobs.

A sweep file (see sweeps/paper.toml) has four kinds of tables:

    [sweep]                   name, description, and defaults: chunk_size, seeds, envs_per_worker
    [policies.<label>]        one evaluated model; <label> names it in results
                              policy = registry name (default: <label>), checkpoint = directory
                              (${VAR} expanded), kwargs = {..} more policy arguments
    [suites.<key>]            one benchmark configuration
                              suite = registry name (default: <key>), tasks = [ids] | "0-4" | "all",
                              episodes_per_task, seeds | seed, envs_per_worker, chunk_size,
                              kwargs = {..} suite arguments (assets = "${VAR}", per_category = 5, ...)
    [tables.<name>]           one table of the paper: policies = [labels], suites = [keys], and optional
                              overrides of tasks, episodes_per_task, seeds | seed

Expansion: sweep -> cells (one per label x suite, shared between tables) -> episodes (the suite's own
enumeration) -> jobs (a job loads its policy once and runs a chunk of its cell's episodes). Job
partitioning is deterministic, so a re-run maps onto the same jobs and runs only what the store lacks.

Bookkeeping in <results>/jobs/ (JSON, so `lamp-bench status` works from any process):
    plan.json               the expanded sweep: cells and their jobs' episodes
    submissions.json        what the driver submitted: job key, executor, Slurm job id, attempt, outcome
    workers/<key>.json      written by the job itself: running / finished / stopped / failed, host, pid
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import socket
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from lamp_bench.harness.config import ConfigError, parse_ids, tomllib
from lamp_bench.harness.executors import (
    LIVE_SLURM_STATES, JobOutcome, JobSpec, SlurmError, SlurmOptions, SlurmRun, SlurmRunner, default_workers,
    run_job, run_local, slurm_states, split_into_jobs,
)
from lamp_bench.harness.registry import POLICIES, SUITES, UnknownNameError, load_builtin_entries
from lamp_bench.harness.suite import Episode
from lamp_bench.results.store import EpisodeStore

DEFAULT_CHUNK_SIZE = 100  # episodes per job; see benchmarks/results/scheduling_overhead.md
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


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


@dataclass(frozen=True)
class Sweep:
    path: Path
    name: str
    description: str
    policies: Mapping[str, PolicyEntry]
    suites: Mapping[str, SuiteEntry]
    tables: Mapping[str, TableEntry]
    defaults: Settings

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
                        cells[(label, suite.suite)] = Cell(**{**known.__dict__, "tables": known.tables + (table.name,)})
        return list(cells.values())


# ----------------------------------------------------------------------------------------------
# Loading and validation


class _Where:
    """Names the place of a value in a sweep file for error messages."""

    def __init__(self, path: Path, table: str):
        self.path, self.table = path, table

    def error(self, key: str | None, message: str) -> SweepError:
        where = f"[{self.table}]" + (f" {key}" if key else "")
        return SweepError(f"{self.path}: {where}: {message}")

    def check_keys(self, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise self.error(key, f"unknown key{hint} (allowed: {', '.join(allowed)})")

    def get(self, data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        if key not in data:
            return default
        value = data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.error(key, f"expected {names}, got {type(value).__name__} {value!r}")
        return value

    def positive(self, data: Mapping[str, Any], key: str) -> int | None:
        value = self.get(data, key, int)
        if value is not None and value < 1:
            raise self.error(key, f"must be >= 1, got {value}")
        return value

    def expand(self, key: str, value: str) -> str:
        """${VAR} / $VAR from the environment and a leading ~; an unset variable is an error."""

        def substitute(match: re.Match) -> str:
            name = match.group(1) or match.group(2)
            if name not in os.environ:
                raise self.error(key, f"environment variable {name} is not set (in {value!r}); "
                                      f"export {name}=... or edit the file")
            return os.environ[name]

        return os.path.expanduser(_VAR.sub(substitute, value))

    def expand_tree(self, key: str, value: Any) -> Any:
        if isinstance(value, str):
            return self.expand(key, value)
        if isinstance(value, dict):
            return {k: self.expand_tree(f"{key}.{k}", v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.expand_tree(key, v) for v in value]
        return value


_SETTINGS_KEYS = ("tasks", "episodes_per_task", "seeds", "seed", "envs_per_worker", "chunk_size")


def _settings(where: _Where, data: Mapping[str, Any], allowed: Sequence[str]) -> Settings:
    if "seed" in data and "seeds" in data:
        raise where.error("seed", "set either seed or seeds, not both")
    values: dict[str, Any] = {}
    if "tasks" in data and "tasks" in allowed:
        values["tasks"] = _tasks(where, data["tasks"])
    if "episodes_per_task" in allowed:
        values["episodes_per_task"] = where.positive(data, "episodes_per_task")
    if "seed" in data:
        values["seeds"] = (where.get(data, "seed", int),)
    if "seeds" in data:
        seeds = where.get(data, "seeds", list)
        if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise where.error("seeds", f"expected a non-empty list of integers, got {seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise where.error("seeds", f"repeats a seed: {seeds}")
        values["seeds"] = tuple(seeds)
    for key in ("envs_per_worker", "chunk_size"):
        if key in allowed:
            values[key] = where.positive(data, key)
    return Settings(**values)


def _tasks(where: _Where, value: Any) -> tuple[int, ...]:
    """A list of ids, a "0-4,7" string, or "all" (empty tuple)."""
    if isinstance(value, list) and value and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        ids = list(value)
    elif isinstance(value, str):
        try:
            parsed = parse_ids(value, "tasks")
        except ConfigError as error:
            raise where.error("tasks", str(error)) from None
        if parsed is None:
            return ()
        ids = parsed
    else:
        raise where.error("tasks", f"expected a list of task ids, a range like \"0-4\" or \"all\"; got {value!r}")
    if any(t < 0 for t in ids) or len(set(ids)) != len(ids):
        raise where.error("tasks", f"task ids must be distinct and >= 0; got {value!r}")
    return tuple(ids)


def _names(where: _Where, data: Mapping[str, Any], key: str, known: Mapping[str, Any], kind: str) -> tuple[str, ...]:
    if key not in data:
        raise where.error(key, f"missing (a list of {kind} names from this file)")
    names = where.get(data, key, list)
    if not names or not all(isinstance(n, str) for n in names):
        raise where.error(key, f"expected a non-empty list of {kind} names; got {names!r}")
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise where.error(key, f"{name!r} is not defined in this file (no [{kind}.{name}] table).{hint} "
                                   f"Defined: {', '.join(known) or 'none'}")
    if len(set(names)) != len(names):
        raise where.error(key, f"lists a name twice: {names}")
    return tuple(names)


def load_sweep(path: str | Path, check_checkpoints: bool = True) -> Sweep:
    """Parse and validate a sweep file; every error names the file, table and key.

    `check_checkpoints=False` skips only the check that checkpoint folders exist (for listing)."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise SweepError(f"{path}: not valid TOML: {error}") from None
    load_builtin_entries()
    top = _Where(path, "top level")
    top.check_keys(data, ("sweep", "policies", "suites", "tables"))
    for key in ("sweep", "policies", "suites", "tables"):
        if key in data and not isinstance(data[key], dict):
            raise top.error(key, f"must be a table ([{key}] / [{key}.<name>]), got {type(data[key]).__name__}")

    head = _Where(path, "sweep")
    meta = data.get("sweep", {})
    head.check_keys(meta, ("name", "description", "seeds", "seed", "envs_per_worker", "chunk_size"))
    defaults = _settings(head, meta, ("envs_per_worker", "chunk_size"))

    policies: dict[str, PolicyEntry] = {}
    for label, entry in data.get("policies", {}).items():
        where = _Where(path, f"policies.{label}")
        if not isinstance(entry, dict):
            raise where.error(None, "must be a table")
        if not LABEL_PATTERN.match(label):
            raise where.error(None, "a label may hold letters, digits and _ . + - (it names files and columns)")
        where.check_keys(entry, ("policy", "checkpoint", "kwargs"))
        name = where.get(entry, "policy", str, label)
        try:
            POLICIES.check(name)
        except UnknownNameError as error:
            raise where.error("policy", str(error)) from None
        checkpoint = where.get(entry, "checkpoint", str)
        if checkpoint is not None:
            checkpoint = str(Path(where.expand("checkpoint", checkpoint)).resolve())
            if check_checkpoints and not Path(checkpoint).is_dir():
                raise where.error("checkpoint", f"{checkpoint} (from {entry['checkpoint']!r}) is not a directory; "
                                                f"train or download the checkpoint there, or edit the path")
            if check_checkpoints:  # the folder's files (either kind, headers only), before anything is submitted
                from lamp_bench.models.policies import check_checkpoint
                try:
                    check_checkpoint(name, checkpoint)
                except ConfigError as error:
                    raise where.error("checkpoint", str(error)) from None
        kwargs = where.expand_tree("kwargs", where.get(entry, "kwargs", dict, {}))
        if "checkpoint" in kwargs:
            raise where.error("kwargs.checkpoint", "set the checkpoint with the `checkpoint` key")
        policies[label] = PolicyEntry(label, name, checkpoint, kwargs)

    suites: dict[str, SuiteEntry] = {}
    for key, entry in data.get("suites", {}).items():
        where = _Where(path, f"suites.{key}")
        if not isinstance(entry, dict):
            raise where.error(None, "must be a table")
        where.check_keys(entry, ("suite", "kwargs") + _SETTINGS_KEYS)
        name = where.get(entry, "suite", str, key)
        try:
            SUITES.check(name)
        except UnknownNameError as error:
            raise where.error("suite", str(error)) from None
        kwargs = where.expand_tree("kwargs", where.get(entry, "kwargs", dict, {}))
        suites[key] = SuiteEntry(key, name, _settings(where, entry, _SETTINGS_KEYS), kwargs)

    tables: dict[str, TableEntry] = {}
    for name, entry in data.get("tables", {}).items():
        where = _Where(path, f"tables.{name}")
        if not isinstance(entry, dict):
            raise where.error(None, "must be a table")
        where.check_keys(entry, ("description", "policies", "suites", "tasks", "episodes_per_task", "seeds", "seed"))
        tables[name] = TableEntry(
            name, where.get(entry, "description", str, ""),
            _names(where, entry, "policies", policies, "policies"), _names(where, entry, "suites", suites, "suites"),
            _settings(where, entry, ("tasks", "episodes_per_task")),
        )
    if not tables:
        raise top.error("tables", "the sweep defines no [tables.<name>]: nothing to run")
    sweep = Sweep(path, head.get(meta, "name", str, path.stem), head.get(meta, "description", str, ""),
                  policies, suites, tables, defaults)
    sweep.cells()  # reports label/suite conflicts between tables now
    return sweep


# ----------------------------------------------------------------------------------------------
# Expansion into jobs


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
    cells = sweep.cells(chunk_size)
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
        spec = JobSpec(policy=cell.policy, suite=cell.suite, episodes=episodes, results_dir=str(out),
                       label=cell.label, policy_kwargs=dict(cell.policy_kwargs),
                       suite_kwargs=dict(cell.suite_kwargs), envs_per_worker=cell.envs_per_worker)
        n_jobs = -(-len(episodes) // cell.chunk_size)
        for chunk in split_into_jobs(spec, n_jobs):
            jobs.append(PlannedJob(job_key(chunk), index, chunk))
    return SweepPlan(sweep.name, str(sweep.path), out, cells, jobs)


# ----------------------------------------------------------------------------------------------
# Bookkeeping files in <results>/jobs/


def jobs_dir(out: str | Path) -> Path:
    return Path(out) / "jobs"


def _write_json(path: Path, data: Any) -> None:
    """Atomic replace, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)


def _read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def _episodes_json(episodes: Sequence[Episode]) -> list[list[int]]:
    return [[e.task_id, e.init_index, e.seed] for e in episodes]


def write_plan(plan: SweepPlan) -> Path:
    path = jobs_dir(plan.results_dir) / "plan.json"
    _write_json(path, {
        "name": plan.name, "source": plan.source, "written_at": _now(),
        "cells": [asdict(c) for c in plan.cells],
        "jobs": [{"key": j.key, "cell": j.cell, "episodes": _episodes_json(j.spec.episodes)} for j in plan.jobs],
    })
    return path


def read_plan(out: str | Path) -> SweepPlan:
    path = jobs_dir(out) / "plan.json"
    data = _read_json(path)
    if data is None:
        raise ConfigError(f"{out} holds no sweep plan ({path} is missing): was it written by `lamp-bench sweep`?")
    cells = [Cell(**{**c, "tables": tuple(c["tables"]), "seeds": tuple(c["seeds"]),
                     "tasks": None if c["tasks"] is None else tuple(c["tasks"])}) for c in data["cells"]]
    jobs = []
    for j in data["jobs"]:
        cell = cells[j["cell"]]
        episodes = [Episode(cell.suite, t, i, s) for t, i, s in j["episodes"]]
        jobs.append(PlannedJob(j["key"], j["cell"], JobSpec(
            policy=cell.policy, suite=cell.suite, episodes=episodes, results_dir=str(out), label=cell.label,
            policy_kwargs=dict(cell.policy_kwargs), suite_kwargs=dict(cell.suite_kwargs),
            envs_per_worker=cell.envs_per_worker)))
    return SweepPlan(data["name"], data["source"], Path(out), cells, jobs)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Ledger:
    """The driver's record of submissions (one writer: the `lamp-bench sweep` process)."""

    def __init__(self, out: str | Path):
        self.path = jobs_dir(out) / "submissions.json"
        self.entries: list[dict[str, Any]] = _read_json(self.path, [])

    def add(self, key: str, spec: JobSpec, executor: str, job_id: str | None, attempt: int = 0) -> dict[str, Any]:
        entry = {"key": key, "label": spec.run_label, "suite": spec.suite, "episodes": _episodes_json(spec.episodes),
                 "policy": spec.policy, "policy_kwargs": spec.policy_kwargs, "suite_kwargs": spec.suite_kwargs,
                 "envs_per_worker": spec.envs_per_worker, "executor": executor, "job_id": job_id, "attempt": attempt, "submitted_at": _now(),
                 "host": socket.gethostname(), "driver_pid": os.getpid(), "outcome": None, "error": None}
        self.entries.append(entry)
        return entry

    def save(self) -> None:
        _write_json(self.path, self.entries)


def _spec_from_entry(entry: Mapping[str, Any], out: str | Path) -> JobSpec:
    return JobSpec(policy=entry["policy"], suite=entry["suite"], results_dir=str(out), label=entry["label"],
                   episodes=[Episode(entry["suite"], t, i, s) for t, i, s in entry["episodes"]],
                   policy_kwargs=dict(entry["policy_kwargs"]), suite_kwargs=dict(entry["suite_kwargs"]),
                   envs_per_worker=entry["envs_per_worker"])


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
        state = {"key": key, "label": spec.run_label, "suite": spec.suite, "episodes": _episodes_json(spec.episodes),
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


# ----------------------------------------------------------------------------------------------
# Running


EXECUTORS = ("inline", "local", "slurm")


@dataclass
class SweepResult:
    jobs: int  # jobs in the plan
    started: int  # jobs run or submitted by this call (jobs the store already completes are skipped)
    adopted: int = 0  # Slurm jobs of an earlier call, still queued, that this call waited for
    failures: list[str] = field(default_factory=list)  # jobs that failed for good, and why
    detached: bool = False


def run_sweep(
    plan: SweepPlan,
    executor: str = "inline",
    *,
    workers: int | None = None,
    slurm: SlurmOptions | None = None,
    detach: bool = False,
    on_progress: Callable[[], None] | None = None,
) -> SweepResult:
    """Run the plan's unfinished jobs; resumable: re-running runs only what the store lacks.

    inline: one job after another in this process. local: worker processes, `workers` at once.
    slurm: a job array; dead jobs are resubmitted for their unfinished episodes; `detach` returns
    once submitted (`lamp-bench status` follows it; running the sweep again waits for those jobs)."""
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}; got {executor!r}")
    if detach and executor != "slurm":
        raise ConfigError("--detach needs --executor slurm (inline and local jobs end with this process)")
    out = plan.results_dir
    write_plan(plan)
    ledger = Ledger(out)
    tracked = TrackedJob(out)
    done = EpisodeStore(out).done_keys()

    def unfinished(spec: JobSpec) -> list[Episode]:
        return [e for e in spec.episodes if (spec.run_label, e.suite, e.task_id, e.init_index, e.seed) not in done]

    todo = [job for job in plan.jobs if unfinished(job.spec)]
    result = SweepResult(jobs=len(plan.jobs), started=0)
    if executor == "inline":
        for job in todo:
            entry = ledger.add(job.key, job.spec, "inline", None)
            ledger.save()
            try:
                tracked(job.spec, on_record=(lambda r: on_progress()) if on_progress else None)
                entry["outcome"] = "finished"
            except Exception as error:  # the next job still runs; finished episodes are in the store
                entry.update(outcome="failed", error=f"{type(error).__name__}: {error}")
                result.failures.append(f"{job.spec.run_label} on {job.spec.suite}: {entry['error']}")
            result.started += 1
            ledger.save()
        return result
    if executor == "local":
        entries = [ledger.add(job.key, job.spec, "local", None) for job in todo]
        ledger.save()
        error_text = None
        try:
            run_local([job.spec for job in todo], workers or default_workers(), jobs_dir(out) / "local",
                      on_progress=on_progress, job_fn=tracked)
        except RuntimeError as error:
            error_text = str(error)
            result.failures = error_text.splitlines()[1:] or [error_text]
        done = EpisodeStore(out).done_keys()
        for job, entry in zip(todo, entries):
            left = unfinished(job.spec)
            entry["outcome"] = "failed" if left else "finished"
            if left:
                entry["error"] = f"{len(left)} episodes unfinished: {error_text or 'job ended early'}"
        result.started = len(todo)
        ledger.save()
        return result

    by_id: dict[str, dict[str, Any]] = {}

    def on_submit(run: SlurmRun) -> None:
        by_id[run.job_id] = ledger.add(job_key(run.spec), run.spec, "slurm", run.job_id, run.attempt)

    def on_end(run: SlurmRun, outcome: str, error: str | None) -> None:
        entry = by_id.get(run.job_id)
        if entry is not None:
            entry.update(outcome=outcome, error=error)
        ledger.save()

    runner = SlurmRunner(slurm or SlurmOptions(), jobs_dir(out) / "slurm", job_fn=tracked,
                         on_submit=on_submit, on_end=on_end)
    # Jobs an earlier call submitted and Slurm still holds are followed, not submitted twice.
    earlier = [e for e in ledger.entries if e["executor"] == "slurm" and e.get("outcome") is None]
    states = slurm_states([e["job_id"] for e in earlier])
    if states is None:
        raise SlurmError("squeue did not answer, so jobs of an earlier run may still be queued; "
                         "retry when Slurm answers (submitting now could run episodes twice)")
    adopted: list[SlurmRun] = []
    covered: set[tuple] = set()
    for entry in earlier:
        if states.get(entry["job_id"]) not in LIVE_SLURM_STATES:
            entry["outcome"] = "ended"  # its episodes are in the store or planned again below
        else:
            spec = _spec_from_entry(entry, out)
            run = runner.adopt(spec, entry["job_id"], entry["attempt"])
            by_id[run.job_id] = entry
            adopted.append(run)
            covered.update((spec.run_label, e.suite, e.task_id, e.init_index, e.seed) for e in spec.episodes)
    specs = []
    for job in todo:
        left = [e for e in unfinished(job.spec) if (job.spec.run_label, e.suite, e.task_id, e.init_index, e.seed)
                not in covered]
        if left:
            specs.append(job.spec if len(left) == len(job.spec.episodes)
                         else JobSpec(**{**job.spec.__dict__, "episodes": left}))
    runs = runner.submit(specs)
    ledger.save()
    result.started, result.adopted = len(runs), len(adopted)
    if detach:
        result.detached = True
        return result
    result.failures = runner.wait(adopted + runs, on_progress=on_progress)
    ledger.save()
    return result


# ----------------------------------------------------------------------------------------------
# Status


@dataclass
class CellStatus:
    label: str
    suite: str
    tables: tuple[str, ...]
    total: int
    done: int = 0  # recorded success or failure
    running: int = 0  # in a job that is running now
    failed: int = 0  # recorded as an error, or in a job that failed for good
    pending: int = 0  # queued or not submitted yet
    successes: int = 0
    errors: list[str] = field(default_factory=list)  # why jobs failed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_status(out: str | Path) -> list[CellStatus]:
    """Per cell of the sweep last planned in `out`: episodes done / running / failed / pending,
    from the episode store, the jobs' own state files and (for Slurm jobs) squeue."""
    out = Path(out)
    plan = read_plan(out)
    store = EpisodeStore(out)
    records = {(r["label"], r["suite"], r["task_id"], r["init_index"], r["seed"]): r for r in store.records()}
    submissions = Ledger(out).entries
    workers = [_read_json(p) for p in sorted((jobs_dir(out) / "workers").glob("*.json"))]
    slurm_ids = [s["job_id"] for s in submissions if s["executor"] == "slurm"]
    slurm_ids += [w["slurm_job_id"] for w in workers if w and w.get("slurm_job_id")]
    queue = slurm_states(slurm_ids) if slurm_ids else {}
    host = socket.gethostname()

    def keys(entry: Mapping[str, Any]) -> list[tuple]:
        return [(entry["label"], entry["suite"], t, i, s) for t, i, s in entry["episodes"]]

    running: set[tuple] = set()
    for worker in workers:
        if not worker or worker.get("state") != "running":
            continue
        if worker.get("slurm_job_id") and queue is not None:
            alive = queue.get(worker["slurm_job_id"]) == "RUNNING"
        elif worker.get("host") == host:
            alive = _pid_alive(int(worker["pid"]))
        else:
            alive = True  # another machine, no scheduler to ask: trust the job's own word
        if alive:
            running.update(keys(worker))

    latest: dict[str, dict[str, Any]] = {}
    for entry in submissions:
        latest[entry["key"]] = entry
    failed: dict[tuple, str] = {}
    for entry in latest.values():
        if entry.get("outcome") == "failed":
            for key in keys(entry):
                failed[key] = entry.get("error") or "job failed"
        elif entry["executor"] == "slurm" and queue and queue.get(entry["job_id"]) == "RUNNING":
            running.update(keys(entry))

    result = []
    for cell, episodes in zip(plan.cells, plan.cell_episodes()):
        status = CellStatus(cell.label, cell.suite, cell.tables, total=len(episodes))
        reasons = set()
        for e in episodes:
            key = (cell.label, e.suite, e.task_id, e.init_index, e.seed)
            record = records.get(key)
            if record is not None and record["status"] != "error":
                status.done += 1
                status.successes += bool(record["success"])
            elif record is not None:
                status.failed += 1
                reasons.add(f"episode error: {record.get('failure_reason')}")
            elif key in running:
                status.running += 1
            elif key in failed:
                status.failed += 1
                reasons.add(failed[key])
            else:
                status.pending += 1
        status.errors = sorted(reasons)
        result.append(status)
    return result
