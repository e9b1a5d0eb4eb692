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
                              overrides of tasks, episodes_per_task, seeds | seed; or paper = true: the
                              paper's table of that name (policies and suites from lamp_bench.results.paper)

Expansion: sweep -> cells (one per label x suite, shared between tables) -> episodes (the suite's own
enumeration) -> jobs (a job loads its policy once and runs a chunk of its cell's episodes). Job
partitioning is deterministic, so a re-run maps onto the same jobs and runs only what the store lacks.

Bookkeeping in <results>/jobs/ (JSON, so `lamp-bench status` works from any process):
    plan.json               the expanded sweep: cells and their jobs' episodes
    submissions.json        what the driver submitted: job key, executor, Slurm job id, attempt, outcome
    workers/<key>.json      written by the job itself: running / finished / stopped / failed, host, pid

Modules: `schema` (the parsed file), `validation` (load_sweep), `planning` (cells -> jobs), `ledger`
(bookkeeping files, TrackedJob), `running` (run_sweep on each executor), `status` (sweep_status),
`steps` ([demos.*] / [train.*] and `only_tables`, the cut that `--tables` makes).
"""
from lamp_bench.harness.sweep.ledger import Ledger, TrackedJob, jobs_dir, read_plan, write_plan
from lamp_bench.harness.sweep.planning import PlannedJob, SweepPlan, job_key, plan_sweep
from lamp_bench.harness.sweep.running import EXECUTORS, SweepResult, run_sweep
from lamp_bench.harness.sweep.schema import (DEFAULT_CHUNK_SIZE, Cell, PolicyEntry, Settings, SuiteEntry, Sweep,
                                             SweepError, TableEntry)
from lamp_bench.harness.sweep.status import CellStatus, sweep_status
from lamp_bench.harness.sweep.steps import only_tables
from lamp_bench.harness.sweep.validation import load_sweep

__all__ = ["Cell", "CellStatus", "DEFAULT_CHUNK_SIZE", "EXECUTORS", "Ledger", "PlannedJob", "PolicyEntry", "Settings",
           "SuiteEntry", "Sweep", "SweepError", "SweepPlan", "SweepResult", "TableEntry", "TrackedJob", "job_key",
           "jobs_dir", "load_sweep", "only_tables", "plan_sweep", "read_plan", "run_sweep", "sweep_status", "write_plan"]
