"""Executors: where jobs (a policy loaded once + a chunk of episodes) run.

`inline` runs jobs in this process (debugging); `local` runs them in worker processes through submitit's
LocalExecutor with at most `workers` at once (submitit itself starts every job at once). The store is the
single source of truth: a job skips episodes its results directory already holds.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import submitit

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.registry import POLICIES, load_builtin_entries
from lamp_bench.harness.runner import RunOptions, run_episodes
from lamp_bench.harness.suite import Episode, SuiteSpec
from lamp_bench.results.record import ENV_ERROR, POLICY_ERROR, EpisodeKey, protocol_id
from lamp_bench.results.store import EpisodeStore

DEFAULT_ENV_RETRIES = 2


def episode_triples(episodes: Sequence[Episode]) -> list[list[int]]:
    """Episodes as JSON (bookkeeping files): [task_id, init_index, seed]; the suite is stored beside them."""
    return [[e.task_id, e.init_index, e.seed] for e in episodes]


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
    record_motion: bool = False
    env_timeout_s: float = 300.0
    env_retries: int = DEFAULT_ENV_RETRIES

    @property
    def run_label(self) -> str:
        return self.label or self.policy

    @property
    def suite_spec(self) -> SuiteSpec:
        return SuiteSpec(self.suite, dict(self.suite_kwargs))

    def keys(self, episodes: Sequence[Episode] | None = None) -> list[EpisodeKey]:
        return [EpisodeKey.of(self.run_label, e) for e in (self.episodes if episodes is None else episodes)]

    def unfinished(self, done: set[EpisodeKey]) -> list[Episode]:
        """The job's episodes the store (its `done_keys`) does not hold yet."""
        return [e for e in self.episodes if EpisodeKey.of(self.run_label, e) not in done]

    def to_dict(self) -> dict[str, Any]:
        """JSON form (bookkeeping files): episodes as [task_id, init_index, seed] triples."""
        data = asdict(self)
        data["episodes"] = episode_triples(self.episodes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **overrides: Any) -> "JobSpec":
        """The inverse of `to_dict`; keys JobSpec does not have (bookkeeping) are ignored."""
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values.update(overrides)
        values["episodes"] = [e if isinstance(e, Episode) else Episode(values["suite"], *e)
                              for e in values["episodes"]]
        values["policy_kwargs"] = dict(values.get("policy_kwargs", {}))
        values["suite_kwargs"] = dict(values.get("suite_kwargs", {}))
        return cls(**values)


@dataclass
class JobOutcome:
    ran: int = 0
    skipped: int = 0
    successes: int = 0
    policy_errors: int = 0
    env_errors: int = 0  # after their retries; a resumed run tries them again
    stopped_early: bool = False


@dataclass(frozen=True)
class JobFailure:
    """A job that raised: which one, and its error's last line."""

    job_id: str
    label: str
    suite: str
    error: str

    def __str__(self) -> str:
        return f"job {self.job_id} ({self.label} on {self.suite}): {self.error}"


class JobsFailed(RuntimeError):
    """Worker jobs raised; the episodes they finished are in the store."""

    def __init__(self, failures: Sequence[JobFailure]):
        self.failures = list(failures)
        super().__init__("worker jobs failed (episodes they finished are kept):\n"
                         + "\n".join(map(str, self.failures)))


def pending_episodes(spec: JobSpec, store: EpisodeStore | None = None) -> list[Episode]:
    store = store or EpisodeStore(spec.results_dir)
    return spec.unfinished(store.done_keys(spec.run_label))


def check_label_identity(store: EpisodeStore, label: str, checkpoint_hash: str | None) -> None:
    """One label = one set of weights: never mix two checkpoints' episodes under one name."""
    hashes = store.checkpoint_hashes(label) - {checkpoint_hash}
    if hashes:
        raise ConfigError(
            f"{store.root} already holds episodes of {label!r} from another checkpoint "
            f"({', '.join(str(h)[:12] for h in hashes)}); use another --label or --out"
        )


def check_label_protocol(store: EpisodeStore, label: str, suite: str, protocol: str) -> None:
    """One label = one protocol per suite: episodes run under other conditions (max steps, cameras,
    asset pack, ...) never mix into the same numbers."""
    others = store.protocols(label, suite) - {protocol}
    if others:
        names = ", ".join("none (written before protocol ids)" if p is None else str(p) for p in sorted(others, key=str))
        raise ConfigError(
            f"{store.root} already holds episodes of {label!r} on {suite} run under another protocol ({names}; "
            f"this run: {protocol}): the suite's conditions changed; use another --label or --out"
        )


def run_job(spec: JobSpec, should_stop: Callable[[], bool] = lambda: False,
            on_record: Callable[[dict[str, Any]], None] | None = None) -> JobOutcome:
    """Build the policy and suite once, run the chunk's unfinished episodes, append their records.

    Raises ConfigError, writing no record, when the configuration is bad (checked before any episode runs,
    or raised by the policy or suite while starting one)."""
    load_builtin_entries()
    store = EpisodeStore(spec.results_dir)
    todo = pending_episodes(spec, store)
    outcome = JobOutcome(skipped=len(spec.episodes) - len(todo))
    if not todo:
        return outcome
    suite = spec.suite_spec.build()
    check_label_protocol(store, spec.run_label, spec.suite, protocol_id(suite.protocol_fields()))
    policy = POLICIES.build(spec.policy, **spec.policy_kwargs)
    writer = store.writer()
    try:
        check_label_identity(store, spec.run_label, policy.describe().get("checkpoint_hash"))
        options = RunOptions(envs_per_worker=spec.envs_per_worker, env_timeout_s=spec.env_timeout_s,
                             env_retries=spec.env_retries, record_video=spec.record_video,
                             record_motion=spec.record_motion, results_dir=Path(spec.results_dir))

        def record(r: dict[str, Any]) -> None:
            writer.append(r)
            outcome.ran += 1
            outcome.successes += r["success"]
            outcome.policy_errors += r["status"] == POLICY_ERROR
            outcome.env_errors += r["status"] == ENV_ERROR
            if on_record:
                on_record(r)

        run_episodes(policy, spec.suite_spec, todo, record, label=spec.run_label, options=options,
                     should_stop=should_stop, built=suite)
        outcome.stopped_early = outcome.ran < len(todo)
    finally:
        writer.close()
        policy.close()
    return outcome


def split_into_jobs(spec: JobSpec, n_jobs: int) -> list[JobSpec]:
    """Round-robin so every job gets a similar mix of tasks (episode lengths differ by task)."""
    n_jobs = max(1, min(n_jobs, len(spec.episodes)))
    chunks = [spec.episodes[i::n_jobs] for i in range(n_jobs)]
    return [replace(spec, episodes=chunk) for chunk in chunks if chunk]


def run_inline(jobs: Sequence[JobSpec], on_record: Callable[[dict[str, Any]], None] | None = None) -> list[JobOutcome]:
    return [run_job(job, on_record=on_record) for job in jobs]


@dataclass
class WorkerResult:
    """What a local worker hands back: the job's outcome, or the error it raised, by kind."""

    outcome: JobOutcome | None = None
    config_error: str | None = None  # bad configuration: the run stops
    error: str | None = None  # "<ExceptionType>: <message>" of any other exception


class CatchingWorker:
    """Wraps a job function for worker processes, so that an exception comes back typed (WorkerResult)
    where submitit would hand back only a traceback string."""

    def __init__(self, job_fn: Callable[..., JobOutcome]):
        self.job_fn = job_fn

    def __call__(self, spec: JobSpec, *args: Any, **kwargs: Any) -> WorkerResult:
        try:
            return WorkerResult(outcome=self.job_fn(spec, *args, **kwargs))
        except ConfigError as error:
            return WorkerResult(config_error=str(error))
        except Exception as error:
            return WorkerResult(error=f"{type(error).__name__}: {error}")


# Thread pools a worker process starts: torch's OpenMP, and Mesa's llvmpipe (one thread per core by default).
THREAD_POOL_VARIABLES = ("OMP_NUM_THREADS", "LP_NUM_THREADS")


@contextmanager
def thread_share(workers: int) -> Iterator[None]:
    """While submitting: each of `workers` local processes sizes its thread pools to its share of the cores.
    Without it, two workers on two cores each start two busy OpenMP threads, which spin against each other
    (measured: a tiny-LaMP episode took 200-300 s instead of 21-27 s). A value the user set is kept."""
    share = str(max(1, (os.cpu_count() or 1) // max(1, workers)))
    unset = [name for name in THREAD_POOL_VARIABLES if name not in os.environ]
    os.environ.update({name: share for name in unset})
    try:
        yield
    finally:
        for name in unset:
            os.environ.pop(name, None)


def run_local(jobs: Sequence[JobSpec], workers: int, log_dir: Path,
              on_progress: Callable[[], None] | None = None, poll_s: float = 1.0,
              job_fn: Callable[..., JobOutcome] = run_job) -> list[JobOutcome]:
    """Each job in its own worker process (submitit LocalExecutor), at most `workers` at once.

    Raises ConfigError at once (other jobs cancelled) when a job reports bad configuration, and
    JobsFailed with one JobFailure per job that raised or whose worker died."""
    executor = submitit.LocalExecutor(folder=str(log_dir))
    executor.update_parameters(timeout_min=60 * 24 * 7)
    wrapped = CatchingWorker(job_fn)
    queue = list(jobs)
    running: list[tuple[int, JobSpec, Any]] = []
    outcomes: list[JobOutcome | None] = [None] * len(queue)
    failures: list[JobFailure] = []
    next_index = 0
    while queue or running:
        while queue and len(running) < max(1, workers):
            spec = queue.pop(0)
            with thread_share(workers):  # submitit copies this process's environment into the worker's
                running.append((next_index, spec, executor.submit(wrapped, spec)))
            next_index += 1
        time.sleep(poll_s)
        if on_progress:
            on_progress()
        still = []
        for index, spec, job in running:
            if not job.done():
                still.append((index, spec, job))
                continue
            died = job.exception()  # the worker process itself failed (killed, out of memory)
            result: WorkerResult = WorkerResult(error=last_line(died)) if died is not None else job.result()
            if result.config_error is not None:
                for _, _, other in running:
                    if other is not job and not other.done():
                        other.cancel(check=False)
                raise ConfigError(result.config_error)
            if result.error is not None:
                failures.append(JobFailure(str(job.job_id), spec.run_label, spec.suite, result.error))
                continue
            outcomes[index] = result.outcome
        running = still
    if failures:
        raise JobsFailed(failures)
    return [o for o in outcomes if o is not None]


def last_line(error: BaseException) -> str:
    """The last non-empty line of an error's text (submitit's errors end with the job's own exception)."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def default_workers() -> int:
    return max(1, (os.cpu_count() or 2) // 2)


def gpu_present() -> bool:
    """Cheap check (no torch import): an NVIDIA device node or CUDA_VISIBLE_DEVICES naming one."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return visible.strip() not in ("", "-1")
    return Path("/dev/nvidia0").exists()


def default_envs_per_worker(workers: int = 1) -> int:
    """On a GPU node inference dominates: batch 8 environments per policy call. On CPUs simulation
    dominates: one environment process per core this worker can have (at most 4)."""
    if gpu_present():
        return 8
    return max(1, min(4, (os.cpu_count() or 1) // max(1, workers)))


# The Slurm executor lives in harness/slurm.py; its names are importable from here too, as they always were.
_SLURM_NAMES = {"LIVE_SLURM_STATES", "SlurmError", "SlurmOptions", "SlurmRun", "SlurmRunner", "SlurmWorker",
                "slurm_minutes", "slurm_states"}


def __getattr__(name: str) -> Any:
    if name in _SLURM_NAMES:
        from lamp_bench.harness import slurm

        return getattr(slurm, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
