"""The Slurm executor: job arrays through submitit's SlurmExecutor -- not AutoExecutor, whose detection
picks Slurm whenever `srun` is on PATH. Job states come from `squeue`, which works on clusters without
Slurm's accounting database (where submitit's `sacct` calls fail). Dead jobs are resubmitted for their
unfinished episodes; USR2 (time limit, preemption) finishes the running episodes, then requeues."""
from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import submitit

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.executors import JobOutcome, JobSpec, last_line, pending_episodes, run_job
from lamp_bench.results.record import EpisodeKey
from lamp_bench.results.store import EpisodeStore

LIVE_SLURM_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                     "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "SPECIAL_EXIT"}


class SlurmError(ConfigError):
    """Slurm refused a submission or is not reachable; the message carries Slurm's own words."""


@dataclass
class SlurmOptions:
    """sbatch settings of the `slurm` executor and how hard it retries."""

    partition: str | None = None
    gpus_per_node: int = 1  # 0 for CPU-only clusters (no GPU request at all)
    cpus_per_task: int | None = None  # Slurm's default when unset; give envs_per_worker + 1 or more
    mem: str | None = None  # Slurm's form: 64G, 32000M
    time: str = "4:00:00"  # per job: minutes or [D-]HH:MM[:SS]
    qos: str | None = None
    account: str | None = None
    constraint: str | None = None
    array_parallelism: int | None = None  # array tasks running at once (default: no limit of ours)
    max_array_size: int = 1000  # Slurm's MaxArraySize is 1001 by default: bigger sweeps go as several arrays
    setup: list[str] = field(default_factory=list)  # shell lines run before the job (module load ...)
    max_retries: int = 2  # resubmissions of a job that died (OOM kill, node failure, scancel)
    max_timeouts: int = 3  # requeues after the time limit (submitit's max_num_timeout)
    signal_delay_s: int = 300  # USR2 this long before the time limit: finish running episodes, requeue
    poll_s: float = 5.0
    grace_s: float = 30.0  # a job gone from the queue without a result is dead after this long


def slurm_minutes(text: str | int) -> int:
    """Slurm's time forms (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in whole minutes."""
    value = str(text).strip()
    try:
        days, _, rest = value.rpartition("-") if "-" in value else ("0", "", value)
        parts = [int(p) for p in rest.split(":")]
        if "-" in value:  # D-HH[:MM[:SS]]
            hours, minutes, seconds = (parts + [0, 0])[:3]
        elif len(parts) == 3:
            hours, minutes, seconds = parts
        elif len(parts) == 2:
            hours, (minutes, seconds) = 0, parts
        elif len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        else:
            raise ValueError
        total = int(days) * 1440 + hours * 60 + minutes + (seconds + 59) // 60
    except ValueError:
        raise SlurmError(f"--time {text!r} is not a Slurm time (minutes, HH:MM:SS or D-HH:MM:SS)") from None
    if total < 1:
        raise SlurmError(f"--time {text!r} must be at least one minute")
    return total


def slurm_states(job_ids: Sequence[str]) -> dict[str, str] | None:
    """State of each given job (array tasks as 123_4) that Slurm still lists (finished jobs drop out
    after its MinJobAge); None when squeue cannot be run."""
    ids = sorted({j.split("_")[0] for j in job_ids if j})
    if not ids:
        return {}
    try:
        result = subprocess.run(
            ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T", f"--jobs={','.join(ids)}"],
            capture_output=True, text=True, timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        if "Invalid job id" not in result.stderr:
            return None
        # squeue refuses the whole query when one of the ids is no longer known: ask one by one
        if len(ids) == 1:
            return {}
        states: dict[str, str] = {}
        for job in ids:
            states.update(slurm_states([job]) or {})
        return states
    states = {}
    for line in result.stdout.splitlines():
        job, _, state = line.strip().partition("|")
        if job:
            states[job] = state.split()[0] if state else "UNKNOWN"
    return states


class SlurmWorker(submitit.helpers.Checkpointable):
    """What a Slurm array task runs. On USR2 (time limit, or preemption where the cluster signals it)
    it starts no new episode, lets the running ones finish and be recorded, then checkpoints and
    requeues through submitit; the requeued task runs only what the store still lacks."""

    def __init__(self, job_fn: Callable[..., JobOutcome] = run_job):
        self.job_fn = job_fn

    def __call__(self, spec: JobSpec) -> JobOutcome:
        stop = {"signal": None}
        requeue = signal.getsignal(signal.SIGUSR2)  # submitit's checkpoint-and-requeue handler

        def on_signal(signum: int, frame: Any) -> None:
            stop["signal"] = signum

        signal.signal(signal.SIGUSR2, on_signal)
        outcome = self.job_fn(spec, should_stop=lambda: stop["signal"] is not None)
        if stop["signal"] is not None and pending_episodes(spec) and callable(requeue):
            requeue(stop["signal"], None)  # dumps the checkpoint, `scontrol requeue`, exits
        return outcome


@dataclass
class SlurmRun:
    """One submitted array task, tracked until it finishes, fails or dies."""

    spec: JobSpec
    job: Any  # submitit SlurmJob
    attempt: int = 0
    gone_since: float | None = None

    @property
    def job_id(self) -> str:
        return self.job.job_id


class SlurmRunner:
    """Submits job arrays, watches them, resubmits the unfinished episodes of jobs that died.

    `on_submit(run)` and `on_end(run, outcome, error)` (outcome: finished | died | failed) let the caller
    keep its own records; episodes themselves only ever go to the store."""

    def __init__(self, options: SlurmOptions, log_dir: Path, job_fn: Callable[..., JobOutcome] = run_job,
                 on_submit: Callable[[SlurmRun], None] | None = None,
                 on_end: Callable[[SlurmRun, str, str | None], None] | None = None):
        if any(shutil.which(command) is None for command in ("sbatch", "squeue", "srun")):
            raise SlurmError("the slurm executor needs Slurm's client commands (sbatch, squeue, srun) on PATH")
        self.options = options
        self.log_dir = Path(log_dir)
        self.job_fn = job_fn
        self.on_submit = on_submit or (lambda run: None)
        self.on_end = on_end or (lambda run, outcome, error: None)
        self.executor = submitit.SlurmExecutor(folder=str(self.log_dir / "%j"), max_num_timeout=options.max_timeouts)
        params: dict[str, Any] = {
            "job_name": "lamp-bench", "time": slurm_minutes(options.time), "signal_delay_s": options.signal_delay_s,
            "setup": list(options.setup), "additional_parameters": {"requeue": True},
        }
        for key in ("partition", "cpus_per_task", "mem", "qos", "account", "constraint", "array_parallelism"):
            if getattr(options, key) is not None:
                params[key] = getattr(options, key)
        if options.gpus_per_node:
            params["gpus_per_node"] = options.gpus_per_node
        self.executor.update_parameters(**params)

    def submit(self, specs: Sequence[JobSpec], attempt: int = 0) -> list[SlurmRun]:
        if not specs:
            return []
        size = max(1, self.options.max_array_size)
        jobs: list[Any] = []
        try:
            for start in range(0, len(specs), size):
                jobs += self.executor.map_array(SlurmWorker(self.job_fn), list(specs[start:start + size]))
        except submitit.core.utils.FailedJobError as error:
            message = str(error).strip()
            raise SlurmError(f"Slurm refused the job array: {message}\n(check --partition, --gpus-per-node "
                             "(0 on clusters without GPUs), --cpus-per-task, --mem, --time, --qos, --account, "
                             "--constraint)") from None
        runs = [SlurmRun(spec, job, attempt) for spec, job in zip(specs, jobs)]
        for run in runs:
            self.on_submit(run)
        return runs

    def adopt(self, spec: JobSpec, job_id: str, attempt: int = 0) -> SlurmRun:
        """Track a job submitted by an earlier process (a resumed or detached sweep)."""
        return SlurmRun(spec, submitit.SlurmJob(folder=str(self.log_dir / "%j"), job_id=job_id), attempt)

    def wait(self, runs: Sequence[SlurmRun], on_progress: Callable[[], None] | None = None) -> list[str]:
        """Until every job finished, failed or ran out of retries; returns why jobs failed for good."""
        active = list(runs)
        failures: list[str] = []
        while active:
            time.sleep(self.options.poll_s)
            states = slurm_states([r.job_id for r in active])
            still: list[SlurmRun] = []
            retry: dict[int, list[JobSpec]] = {}
            done: set[EpisodeKey] | None = None  # the store, read once per poll and only when a job ended
            for run in active:
                verdict = self._check(run, states)
                if verdict == "running":
                    still.append(run)
                    continue
                if verdict not in ("finished", "died"):  # the job raised: a retry would raise again
                    failures.append(f"{run.spec.run_label} on {run.spec.suite}: job {run.job_id}: {verdict}")
                    self.on_end(run, "failed", verdict)
                    continue
                done = EpisodeStore(run.spec.results_dir).done_keys() if done is None else done
                remaining = run.spec.unfinished(done)
                if not remaining:
                    self.on_end(run, "finished", None)
                    continue
                # Died (OOM kill, node failure, scancel), or stopped early without being requeued.
                state = "finished early" if verdict == "finished" else (states or {}).get(
                    run.job_id, "no longer listed by squeue")
                reason = f"job {run.job_id} ended ({state}) with {len(remaining)} episodes unfinished"
                if run.attempt < self.options.max_retries:
                    self.on_end(run, "died", reason)
                    retry.setdefault(run.attempt + 1, []).append(replace(run.spec, episodes=remaining))
                else:
                    message = f"{reason}; gave up after {run.attempt + 1} attempts{self._log_tail(run)}"
                    failures.append(f"{run.spec.run_label} on {run.spec.suite}: {message}")
                    self.on_end(run, "failed", message)
            for attempt, specs in sorted(retry.items()):
                still += self.submit(specs, attempt)
            active = still
            if on_progress:
                on_progress()
        return failures

    def _check(self, run: SlurmRun, states: dict[str, str] | None) -> str:
        """running | finished | died | the error of a job that raised."""
        if run.job.paths.result_pickle.exists():
            error = run.job.exception()
            if error is None:
                return "finished"
            return last_line(error)
        state = None if states is None else states.get(run.job_id)
        if states is None or state in LIVE_SLURM_STATES:
            run.gone_since = None  # also while squeue cannot be asked: never resubmit blind
            return "running"
        # Gone from the queue without a result. A result written just now may not be visible yet
        # on a network filesystem: wait `grace_s` before calling the job dead.
        now = time.monotonic()
        if run.gone_since is None:
            run.gone_since = now
        return "running" if now - run.gone_since < self.options.grace_s else "died"

    @staticmethod
    def _log_tail(run: SlurmRun, lines: int = 5) -> str:
        text = (run.job.stderr() or "").strip().splitlines()[-lines:]
        return (f"; last lines of {run.job.paths.stderr}:\n  " + "\n  ".join(text)) if text else ""
