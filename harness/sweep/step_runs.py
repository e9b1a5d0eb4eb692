"""Running a sweep's steps (harness.sweep.steps) before its cells, and their state for `lamp-bench status`.

inline: each step in this process. local: each step in a child process (`python -m
lamp_bench.harness.sweep SWEEP OUT KEY`), up to `--workers` at once, each once its dependencies finished. slurm: one job per
step, chained with `--dependency=afterok:<job>` on the jobs of its unfinished dependencies; training jobs
get the `[train]` resources; evaluation arrays of cells whose training is still queued are submitted
with `afterok` on it (`submit_after_steps`), and Slurm cancels them if it fails (`kill-on-invalid-dep`).

Resume: a step whose `step.json` says finished is skipped; a killed training resumes from its last save
(the trainer's own resume). A failed step blocks everything downstream: its dependent steps are not run
and its cells are left out of the run, with the reason in `step.json` and in `lamp-bench status`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.executors import thread_share
from lamp_bench.harness.sweep.steps import DemoStep, StepGraph, TrainStep, cell_step

STEP_FILE = "step.json"
STEPS_FILE = "steps.json"  # in <out>/jobs/: the graph's keys, order, flags (for status)
FINISHED, FAILED, RUNNING, SUBMITTED = "finished", "failed", "running", "submitted"
CHILD_POLL_S = 0.5


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def read_step(folder: Path) -> dict[str, Any]:
    path = folder / STEP_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


# ------------------------------------------------------------------------------------------------
# One step (what a child process or Slurm job runs)


def run_demos(step: DemoStep, out: Path) -> dict[str, Any]:
    from lamp_bench.harness.demos import collect_demos
    from lamp_bench.harness.registry import POLICIES, load_builtin_entries
    from lamp_bench.models.training.lineage import DEMO_SET_MANIFEST

    folder = step.folder(out)
    summary = collect_demos(step.suite, list(step.tasks) if step.tasks else None, step.episodes, folder,
                            seed=step.seed, progress=False, cameras=step.cameras, image_size=step.image_size,
                            action_noise=step.noise, init_states=list(step.init_states) if step.init_states else None,
                            suite_kwargs=step.suite_kwargs)
    if summary["demos"] == 0:
        raise RuntimeError(f"the oracle recorded no successful demonstration of {step.suite} tasks "
                           f"{step.tasks or 'all'}; try other init states or tasks")
    load_builtin_entries()
    manifest = {"step": step.key, "suite": step.suite, "tasks": step.tasks, "episodes_per_task": step.episodes,
                "init_states_tried": step.init_states, "noise": step.noise, "seed": step.seed,
                "image_size": step.image_size, "cameras": list(step.cameras),
                "suite_kwargs": {k: v for k, v in step.suite_kwargs.items() if k != "assets"},
                "oracle": POLICIES.build("oracle").describe(),
                "collected": [{k: t[k] for k in ("task_id", "demos", "attempts", "short_by")} for t in summary["tasks"]]}
    _write(folder / DEMO_SET_MANIFEST, manifest)
    return {"demos": summary["demos"], "short_by": sum(t["short_by"] for t in summary["tasks"])}


def run_training(step: TrainStep, out: Path, graph: StepGraph) -> dict[str, Any]:
    from lamp_bench.harness.selection import train_with_selection
    from lamp_bench.models.lamp.checkpoint import checkpoint_hash
    from lamp_bench.models.training.config import build_train_config

    options = dict(step.options)
    if step.init_from:
        options["init_checkpoint"] = str(graph.train[step.init_from].checkpoint(out))
    options.setdefault("progress", False)
    config = build_train_config(data=[str(graph.demos[d].folder(out)) for d in step.data], out=str(step.run_dir(out)),
                                **options)
    train_with_selection(config, step.select)
    link = step.checkpoint(out)
    tmp = link.with_name(f"checkpoint.{os.getpid()}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink("run", tmp)  # relative: the results directory may move
    os.replace(tmp, link)
    return {"checkpoint": str(link), "checkpoint_hash": checkpoint_hash(link)}


def run_step(graph: StepGraph, key: str, out: str | Path) -> dict[str, Any]:
    """Run one step, recording running / finished / failed in its step.json; returns the result."""
    out = Path(out).resolve()
    step = graph.step(key)
    folder = step.folder(out)
    state = read_step(folder)
    if state.get("status") == FINISHED:
        return state
    if isinstance(step, TrainStep):
        link = step.checkpoint(out)
        if link.is_symlink() or link.exists():
            link.unlink()  # an unfinished step never leaves a checkpoint for cells to load
    _write(folder / STEP_FILE, {**state, "step": key, "status": RUNNING, "started_at": _now(), "pid": os.getpid(),
                                "host": os.uname().nodename, "error": None})
    try:
        result = run_demos(step, out) if isinstance(step, DemoStep) else run_training(step, out, graph)
    except BaseException as error:
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        _write(folder / STEP_FILE, {**read_step(folder), "status": FAILED, "ended_at": _now(),
                                    "error": f"{type(error).__name__}: {lines[-1] if lines else ''}".strip()})
        raise
    finished = {**read_step(folder), "status": FINISHED, "ended_at": _now(), "result": result}
    _write(folder / STEP_FILE, finished)
    return finished


# ------------------------------------------------------------------------------------------------
# The graph


@dataclass
class StepsOutcome:
    blocked: dict[str, str] = field(default_factory=dict)  # step key -> why it did not finish
    in_flight: dict[str, str] = field(default_factory=dict)  # step key -> Slurm job id (queued or running)

    def cell_blocked(self, cell: Any) -> str | None:
        key = cell_step(cell)
        return self.blocked.get(key) if key else None


def _blocked_by(graph: StepGraph, key: str, blocked: dict[str, str]) -> str | None:
    for need in graph.step(key).needs:
        if need in blocked:
            return f"blocked: {need} did not finish ({blocked[need]})"
    return None


def write_graph(graph: StepGraph, out: Path, source: str) -> None:
    _write(Path(out) / "jobs" / STEPS_FILE, {"source": source, "order": list(graph.order), "flags": list(graph.flags),
                                             "folders": {k: str(graph.step(k).folder(Path(out))) for k in graph.order}})


def run_steps(graph: StepGraph, out: Path, executor: str, source: str, slurm: Any = None,
              log: Callable[[str], None] = lambda line: None, workers: int = 1) -> StepsOutcome:
    """Run (or submit, on Slurm) every unfinished step in dependency order; local runs up to `workers`
    independent steps at once."""
    out = Path(out).resolve()  # status may be asked from another working directory
    write_graph(graph, out, source)
    outcome = StepsOutcome()
    pending = [key for key in graph.order if read_step(graph.step(key).folder(out)).get("status") != FINISHED]
    if executor == "local":
        _run_children(graph, pending, out, source, max(1, workers), outcome, log)
        return outcome
    for key in pending:
        if _mark_blocked(graph, key, out, outcome):
            continue
        if executor == "slurm":
            live = _live_job(read_step(graph.step(key).folder(out)))  # submitted by an earlier (detached) call
            outcome.in_flight[key] = live or _submit_slurm(graph, key, out, slurm, outcome.in_flight)
            continue
        log(f"{key}: running (in this process)")
        try:
            run_step(graph, key, out)
        except Exception as error:  # a failed step blocks its dependents; the others go on
            outcome.blocked[key] = read_step(graph.step(key).folder(out)).get("error") or f"{type(error).__name__}: {error}"
            log(f"{key}: failed: {outcome.blocked[key]}")
    return outcome


def _mark_blocked(graph: StepGraph, key: str, out: Path, outcome: StepsOutcome) -> bool:
    """A step whose dependency failed is not run: failed in its step.json, with the reason."""
    reason = _blocked_by(graph, key, outcome.blocked)
    if reason is None:
        return False
    folder = graph.step(key).folder(out)
    _write(folder / STEP_FILE, {**read_step(folder), "step": key, "status": FAILED, "error": reason})
    outcome.blocked[key] = reason
    return True


def _run_children(graph: StepGraph, pending: list[str], out: Path, source: str, workers: int,
                  outcome: StepsOutcome, log: Callable[[str], None]) -> None:
    """Each step in a child process of this process group (a SIGKILL of the sweep takes them along), up to
    `workers` at once, each started as soon as the steps it needs have finished. A child's thread pools get
    its share of the cores: two demonstration collections or two one-thread trainings side by side do more
    work on two cores than one at a time (the mini paper's step timings: benchmarks/results/mini_paper.json)."""
    waiting, running = list(pending), {}  # key -> (process, log file)
    while waiting or running:
        for key in list(waiting):
            if len(running) >= workers:
                break
            if any(need in running or need in waiting for need in graph.step(key).needs):
                continue
            waiting.remove(key)
            if _mark_blocked(graph, key, out, outcome):
                continue
            log(f"{key}: running (child process)")
            with thread_share(min(workers, len(running) + 1 + len(waiting))):  # alone at the end: every core
                running[key] = _start_child(key, out, source)
        if not running:
            if waiting:  # cannot happen in dependency order; never spin
                raise RuntimeError(f"steps {waiting} wait on steps that are neither running nor pending")
            return
        ended = [key for key, (process, _) in running.items() if process.poll() is not None]
        if not ended:
            time.sleep(CHILD_POLL_S)
        for key in ended:
            process, sink = running.pop(key)
            sink.close()
            if process.returncode != 0:  # a failed step blocks its dependents; the others go on
                error = read_step(_folder_of(out, key)).get("error")
                outcome.blocked[key] = error or f"step process exited with code {process.returncode} (log: {sink.name})"
                log(f"{key}: failed: {outcome.blocked[key]}")


def _start_child(key: str, out: Path, source: str) -> tuple[subprocess.Popen, Any]:
    log = _folder_of(out, key) / "step.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    sink = open(log, "ab")
    process = subprocess.Popen([sys.executable, "-m", "lamp_bench.harness.sweep", source, str(out), key],
                               stdout=sink, stderr=subprocess.STDOUT)
    return process, sink


def _folder_of(out: Path, key: str) -> Path:
    kind, _, name = key.partition(":")
    return Path(out) / "steps" / kind / name


def _submit_slurm(graph: StepGraph, key: str, out: Path, options: Any, in_flight: dict[str, str]) -> str:
    import submitit

    from lamp_bench.harness.executors import SlurmError, slurm_minutes

    step = graph.step(key)
    resources = graph.resources
    training = isinstance(step, TrainStep)
    executor = submitit.SlurmExecutor(folder=str(out / "jobs" / "steps" / "%j"))
    params: dict[str, Any] = {"job_name": f"lamp-bench-{key.replace(':', '-')}",
                              "time": slurm_minutes(resources.time if training else getattr(options, "time", "4:00:00")),
                              "setup": list(getattr(options, "setup", []) or []),
                              "additional_parameters": {"kill-on-invalid-dep": "yes"}}
    partition = (resources.partition if training else None) or getattr(options, "partition", None)
    if partition:
        params["partition"] = partition
    gpus = resources.gpus if training else 0
    if gpus:
        params["gpus_per_node"] = gpus
    for name in ("cpus_per_task", "mem"):
        value = getattr(resources, name) if training else None
        if value is not None:
            params[name] = value
    waits = [in_flight[need] for need in step.needs if need in in_flight]
    if waits:
        params["dependency"] = "afterok:" + ":".join(waits)
    executor.update_parameters(**params)
    try:
        job = executor.submit(run_step, graph, key, str(out))
    except submitit.core.utils.FailedJobError as error:
        raise SlurmError(f"Slurm refused the job of step {key}: {str(error).strip()}") from None
    state = read_step(step.folder(out))
    _write(step.folder(out) / STEP_FILE, {**state, "step": key, "status": SUBMITTED, "job_id": job.job_id,
                                          "submitted_at": _now(), "after": waits, "error": None})
    return str(job.job_id)


def _live_job(state: dict[str, Any]) -> str | None:
    """The Slurm job id of a step submitted earlier that Slurm still holds (queued or running)."""
    from lamp_bench.harness.executors import LIVE_SLURM_STATES, slurm_states

    job_id = state.get("job_id")
    if not job_id or state.get("status") not in (SUBMITTED, RUNNING):
        return None
    states = slurm_states([str(job_id)])
    if states is None:
        return str(job_id)  # squeue did not answer: never submit a step twice
    return str(job_id) if states.get(str(job_id)) in LIVE_SLURM_STATES else None


def submit_after_steps(runner: Any, specs: Sequence[Any], out: Path) -> list[Any]:
    """Submit evaluation job specs through the sweep's SlurmRunner, each group of cells with
    `afterok` on the Slurm job of the training step it evaluates while that job is in flight."""
    groups: dict[str | None, list[Any]] = {}
    for spec in specs:
        key = cell_step(spec)
        job_id = _live_job(read_step(_folder_of(out, key))) if key else None
        groups.setdefault(job_id, []).append(spec)
    runs: list[Any] = []
    extra = dict(runner.executor.parameters.get("additional_parameters") or {})
    for job_id, group in groups.items():
        if job_id is None:
            runner.executor.update_parameters(dependency=None, additional_parameters=extra)
        else:  # a failed training makes Slurm cancel the array instead of holding it forever
            runner.executor.update_parameters(dependency=f"afterok:{job_id}",
                                              additional_parameters={**extra, "kill-on-invalid-dep": "yes"})
        runs += runner.submit(group)
    runner.executor.update_parameters(dependency=None, additional_parameters=extra)  # resubmissions wait for nothing
    return runs


def blocked_cells(plan: Any, executor: str, slurm: Any = None, workers: int = 1) -> set[int]:
    """Run (or submit) the plan's steps first; the indices of the cells that a failed step blocks."""
    graph: StepGraph | None = getattr(plan, "steps", None)
    if not graph:
        return set()
    outcome = run_steps(graph, plan.results_dir, executor, plan.source, slurm, workers=workers)
    return {i for i, cell in enumerate(plan.cells) if outcome.cell_blocked(cell)}


def main(argv: Sequence[str]) -> int:
    """`python -m lamp_bench.harness.sweep SWEEP OUT KEY`: one step in this process."""
    from lamp_bench.harness.sweep.validation import load_sweep

    source, out, key = argv
    try:
        run_step(load_sweep(source).steps, key, out)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        return 1
    return 0
