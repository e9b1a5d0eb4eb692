"""Running a sweep plan on one of the executors (inline, local, slurm); resumable."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.executors import JobsFailed, default_workers, run_local
from lamp_bench.harness.slurm import LIVE_SLURM_STATES, SlurmError, SlurmOptions, SlurmRun, SlurmRunner, slurm_states
from lamp_bench.harness.sweep.ledger import Ledger, TrackedJob, jobs_dir, write_plan
from lamp_bench.harness.sweep.planning import PlannedJob, SweepPlan, job_key
from lamp_bench.harness.sweep.step_runs import blocked_cells, submit_after_steps
from lamp_bench.results.record import EpisodeKey
from lamp_bench.results.store import EpisodeStore


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
    """Run the plan's unfinished jobs; resumable: re-running runs only what the store lacks (episodes
    that ended in an environment error count as unfinished, so they are retried).

    inline: one job after another in this process. local: worker processes, `workers` at once.
    slurm: a job array; dead jobs are resubmitted for their unfinished episodes; `detach` returns
    once submitted (`lamp-bench status` follows it; running the sweep again waits for those jobs).
    A ConfigError in a job (bad configuration) stops the sweep at once and is raised."""
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}; got {executor!r}")
    if detach and executor != "slurm":
        raise ConfigError("--detach needs --executor slurm (inline and local jobs end with this process)")
    write_plan(plan)
    # demos and training steps first (local: `workers` at once); a failed one blocks its cells
    blocked = blocked_cells(plan, executor, slurm, workers or default_workers())
    done = EpisodeStore(plan.results_dir).done_keys()
    todo = [job for job in plan.jobs if job.cell not in blocked and job.spec.unfinished(done)]
    result = SweepResult(jobs=len(plan.jobs), started=0)
    if executor == "inline":
        return _run_inline(plan, todo, result, on_progress)
    if executor == "local":
        return _run_local(plan, todo, result, workers, on_progress)
    return _run_slurm(plan, todo, result, slurm or SlurmOptions(), detach, on_progress)


def _run_inline(plan: SweepPlan, todo: list[PlannedJob], result: SweepResult,
                on_progress: Callable[[], None] | None) -> SweepResult:
    ledger, tracked = Ledger(plan.results_dir), TrackedJob(plan.results_dir)
    for job in todo:
        entry = ledger.add(job.key, job.spec, "inline", None)
        ledger.save()
        result.started += 1
        try:
            tracked(job.spec, on_record=(lambda r: on_progress()) if on_progress else None)
            entry["outcome"] = "finished"
        except ConfigError as error:  # bad configuration: every later job would meet it too
            entry.update(outcome="failed", error=f"{type(error).__name__}: {error}")
            ledger.save()
            raise
        except Exception as error:  # the next job still runs; finished episodes are in the store
            entry.update(outcome="failed", error=f"{type(error).__name__}: {error}")
            result.failures.append(f"{job.spec.run_label} on {job.spec.suite}: {entry['error']}")
        ledger.save()
    return result


def _run_local(plan: SweepPlan, todo: list[PlannedJob], result: SweepResult, workers: int | None,
               on_progress: Callable[[], None] | None) -> SweepResult:
    out = plan.results_dir
    ledger = Ledger(out)
    entries = [ledger.add(job.key, job.spec, "local", None) for job in todo]
    ledger.save()
    why = "job ended early"
    config_error: ConfigError | None = None
    try:
        run_local([job.spec for job in todo], workers or default_workers(), jobs_dir(out) / "local",
                  on_progress=on_progress, job_fn=TrackedJob(out))
    except JobsFailed as error:
        result.failures = [str(f) for f in error.failures]
        why = "; ".join(result.failures)
    except ConfigError as error:
        config_error, why = error, f"{type(error).__name__}: {error}"
    done = EpisodeStore(out).done_keys()
    for job, entry in zip(todo, entries):
        left = job.spec.unfinished(done)
        entry["outcome"] = "failed" if left else "finished"
        if left:
            entry["error"] = f"{len(left)} episodes unfinished: {why}"
    result.started = len(todo)
    ledger.save()
    if config_error is not None:
        raise config_error
    return result


def _run_slurm(plan: SweepPlan, todo: list[PlannedJob], result: SweepResult, options: SlurmOptions, detach: bool,
               on_progress: Callable[[], None] | None) -> SweepResult:
    out = plan.results_dir
    ledger = Ledger(out)
    by_id: dict[str, dict[str, Any]] = {}

    def on_submit(run: SlurmRun) -> None:
        by_id[run.job_id] = ledger.add(job_key(run.spec), run.spec, "slurm", run.job_id, run.attempt)

    def on_end(run: SlurmRun, outcome: str, error: str | None) -> None:
        entry = by_id.get(run.job_id)
        if entry is not None:
            entry.update(outcome=outcome, error=error)
        ledger.save()

    runner = SlurmRunner(options, jobs_dir(out) / "slurm", job_fn=TrackedJob(out), on_submit=on_submit, on_end=on_end)
    # Jobs an earlier call submitted and Slurm still holds are followed, not submitted twice.
    earlier = [e for e in ledger.entries if e["executor"] == "slurm" and e.get("outcome") is None]
    states = slurm_states([e["job_id"] for e in earlier])
    if states is None:
        raise SlurmError("squeue did not answer, so jobs of an earlier run may still be queued; "
                         "retry when Slurm answers (submitting now could run episodes twice)")
    adopted: list[SlurmRun] = []
    covered: set[EpisodeKey] = set()
    for entry in earlier:
        if states.get(entry["job_id"]) not in LIVE_SLURM_STATES:
            entry["outcome"] = "ended"  # its episodes are in the store or planned again below
        else:
            spec = Ledger.spec(entry, out)
            run = runner.adopt(spec, entry["job_id"], entry["attempt"])
            by_id[run.job_id] = entry
            adopted.append(run)
            covered.update(spec.keys())
    done = EpisodeStore(out).done_keys() | covered
    specs = []
    for job in todo:
        left = job.spec.unfinished(done)
        if left:
            specs.append(job.spec if len(left) == len(job.spec.episodes) else replace(job.spec, episodes=left))
    runs = submit_after_steps(runner, specs, out)  # afterok on the training jobs they evaluate
    ledger.save()
    result.started, result.adopted = len(runs), len(adopted)
    if detach:
        result.detached = True
        return result
    result.failures = runner.wait(adopted + runs, on_progress=on_progress)
    ledger.save()
    return result
