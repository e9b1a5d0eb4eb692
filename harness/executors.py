"""Executors: where jobs (a policy loaded once + a chunk of episodes) run.

`inline` runs jobs in this process (debugging); `local` runs them in worker processes through submitit's
LocalExecutor with at most `workers` at once (submitit itself starts every job at once). The store is the
single source of truth: a job skips episodes its results directory already holds.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.registry import POLICIES, SUITES, load_builtin_entries
from lamp_bench.harness.runner import RunOptions, run_episodes
from lamp_bench.harness.suite import Episode
from lamp_bench.results.store import EpisodeStore, episode_key


@dataclass
class JobSpec:
    """Everything a worker needs to run one chunk of episodes; picklable."""

    policy: str
    suite: str
    episodes: list[Episode]
    results_dir: str
    label: str = ""
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    suite_kwargs: dict[str, Any] = field(default_factory=dict)
    envs_per_worker: int = 1
    record_video: int = 0
    env_timeout_s: float = 300.0

    @property
    def run_label(self) -> str:
        return self.label or self.policy


@dataclass
class JobOutcome:
    ran: int = 0
    skipped: int = 0
    successes: int = 0
    errors: int = 0
    stopped_early: bool = False


def pending_episodes(spec: JobSpec, store: EpisodeStore | None = None) -> list[Episode]:
    store = store or EpisodeStore(spec.results_dir)
    done = store.done_keys(spec.run_label)
    return [e for e in spec.episodes
            if episode_key(spec.run_label, e.suite, e.task_id, e.init_index, e.seed) not in done]


def check_label_identity(store: EpisodeStore, label: str, checkpoint_hash: str | None) -> None:
    """One label = one set of weights: never mix two checkpoints' episodes under one name."""
    hashes = store.checkpoint_hashes(label) - {checkpoint_hash}
    if hashes:
        raise ConfigError(
            f"{store.root} already holds episodes of {label!r} from another checkpoint "
            f"({', '.join(str(h)[:12] for h in hashes)}); use another --label or --out"
        )


def run_job(spec: JobSpec, should_stop: Callable[[], bool] = lambda: False,
            on_record: Callable[[dict[str, Any]], None] | None = None) -> JobOutcome:
    """Build the policy and suite once, run the chunk's unfinished episodes, append their records."""
    load_builtin_entries()
    store = EpisodeStore(spec.results_dir)
    todo = pending_episodes(spec, store)
    outcome = JobOutcome(skipped=len(spec.episodes) - len(todo))
    if not todo:
        return outcome
    policy = POLICIES.build(spec.policy, **spec.policy_kwargs)
    writer = store.writer()
    try:
        check_label_identity(store, spec.run_label, policy.describe().get("checkpoint_hash"))
        suite = SUITES.build(spec.suite, **spec.suite_kwargs)
        options = RunOptions(
            envs_per_worker=spec.envs_per_worker, env_timeout_s=spec.env_timeout_s,
            record_video=spec.record_video, results_dir=Path(spec.results_dir),
            suite_name=spec.suite, suite_kwargs=spec.suite_kwargs,
        )

        def record(r: dict[str, Any]) -> None:
            writer.append(r)
            outcome.ran += 1
            outcome.successes += r["success"]
            outcome.errors += r["status"] == "error"
            if on_record:
                on_record(r)

        run_episodes(policy, suite, todo, record, label=spec.run_label, options=options, should_stop=should_stop)
        outcome.stopped_early = outcome.ran < len(todo)
    finally:
        writer.close()
        policy.close()
    return outcome


def split_into_jobs(spec: JobSpec, n_jobs: int) -> list[JobSpec]:
    """Round-robin so every job gets a similar mix of tasks (episode lengths differ by task)."""
    n_jobs = max(1, min(n_jobs, len(spec.episodes)))
    chunks = [spec.episodes[i::n_jobs] for i in range(n_jobs)]
    return [JobSpec(**{**spec.__dict__, "episodes": chunk}) for chunk in chunks if chunk]


def run_inline(jobs: Sequence[JobSpec], on_record: Callable[[dict[str, Any]], None] | None = None) -> list[JobOutcome]:
    return [run_job(job, on_record=on_record) for job in jobs]


def run_local(jobs: Sequence[JobSpec], workers: int, log_dir: Path,
              on_progress: Callable[[], None] | None = None, poll_s: float = 1.0) -> list[JobOutcome]:
    """Each job in its own worker process (submitit LocalExecutor), at most `workers` at once.

    A job that raised is reported through `job.exception()` (submitit reports it as FINISHED)."""
    import submitit

    executor = submitit.LocalExecutor(folder=str(log_dir))
    executor.update_parameters(timeout_min=60 * 24 * 7)
    queue = list(jobs)
    running: list[tuple[int, Any]] = []
    outcomes: list[JobOutcome | None] = [None] * len(queue)
    failures: list[str] = []
    next_index = 0
    while queue or running:
        while queue and len(running) < max(1, workers):
            running.append((next_index, executor.submit(run_job, queue.pop(0))))
            next_index += 1
        time.sleep(poll_s)
        if on_progress:
            on_progress()
        still = []
        for index, job in running:
            if not job.done():
                still.append((index, job))
                continue
            error = job.exception()
            if error is not None:
                failures.append(f"job {job.job_id}: {type(error).__name__}: {str(error).strip().splitlines()[-1]}")
            else:
                outcomes[index] = job.result()
        running = still
    if failures:
        raise RuntimeError("worker jobs failed (episodes they finished are kept):\n" + "\n".join(failures))
    return [o for o in outcomes if o is not None]


def default_workers() -> int:
    return max(1, (os.cpu_count() or 2) // 2)
