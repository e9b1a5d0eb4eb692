"""Evaluation from Python: `evaluate(policy_or_checkpoint, suite=..., ...)` for training loops and notebooks.

    import lamp_bench

    result = lamp_bench.evaluate("ckpt/lamp-tiny", suite="libero_spatial", tasks=[0, 1], episodes_per_task=5)
    result = lamp_bench.evaluate(my_policy, suite="libero_spatial", init_states="10-19")   # any harness Policy
    print(result.summary.success_rate, result.summary.interval)

It runs the same runner as `lamp-bench run` (K environments in lockstep, env retries, policy and
environment failures recorded as outcomes), in this process. The records are the store's
(`results.record.EpisodeRecord` as JSON); with `out=DIR` they are also appended to that results directory
and a repeated call runs only the episodes DIR does not hold yet (resumable, like `lamp-bench run`).
Without `out` nothing is written.

Init states: `init_states` (ids or a range string "10-19") picks which of each task's fixed initial states
run, one episode each; otherwise `episodes_per_task` takes states 0..n-1 (the suite's protocol).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from lamp_bench.harness.config import ConfigError, parse_ids
from lamp_bench.harness.executors import DEFAULT_ENV_RETRIES, check_label_identity, check_label_protocol
from lamp_bench.harness.policy import Policy
from lamp_bench.harness.registry import POLICIES, load_builtin_entries
from lamp_bench.harness.runner import RunOptions, run_episodes
from lamp_bench.harness.suite import Episode, Suite, SuiteSpec
from lamp_bench.results.record import ENV_ERROR, POLICY_ERROR, EpisodeKey, protocol_id, record_key
from lamp_bench.results.stats import wilson_interval
from lamp_bench.results.store import EpisodeStore


@dataclass(frozen=True)
class TaskSummary:
    task_id: int
    episodes: int
    successes: int


@dataclass(frozen=True)
class EvaluationSummary:
    """Success over the requested episodes (errors count as failures, as in the report)."""

    label: str
    suite: str
    checkpoint_hash: str | None
    episodes: int
    successes: int
    policy_errors: int
    env_errors: int
    interval: tuple[float, float]  # 95% Wilson interval of the success rate
    init_states: tuple[int, ...]
    per_task: tuple[TaskSummary, ...]
    wall_time_s: float
    ran: int  # episodes run by this call (the rest came from `out`)

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "suite": self.suite, "checkpoint_hash": self.checkpoint_hash,
                "episodes": self.episodes, "successes": self.successes, "success_rate": self.success_rate,
                "interval": list(self.interval), "policy_errors": self.policy_errors, "env_errors": self.env_errors,
                "init_states": list(self.init_states), "ran": self.ran, "wall_time_s": self.wall_time_s,
                "per_task": [{"task_id": t.task_id, "episodes": t.episodes, "successes": t.successes}
                             for t in self.per_task]}


@dataclass
class Evaluation:
    records: list[dict[str, Any]] = field(default_factory=list)
    summary: EvaluationSummary | None = None


def evaluation_episodes(suite: Suite, tasks: Sequence[int] | str | None, episodes_per_task: int | None,
                        init_states: Sequence[int] | str | None, seed: int) -> list[Episode]:
    """The episodes to run: the suite's first n init states per task, or exactly `init_states`."""
    task_ids = parse_ids(tasks) if isinstance(tasks, str) else (list(tasks) if tasks is not None else None)
    if init_states is None:
        return suite.episodes(task_ids, episodes_per_task, seed)
    states = parse_ids(init_states, "init_states") if isinstance(init_states, str) else list(init_states)
    if states is None:  # "all"
        return suite.episodes(task_ids, None, seed) if episodes_per_task is None else \
            suite.episodes(task_ids, episodes_per_task, seed)
    if not states:
        raise ConfigError("init_states is empty; give ids such as [10, 11] or a range such as \"10-19\"")
    if episodes_per_task is not None and episodes_per_task != len(states):
        raise ConfigError(f"init_states names {len(states)} states but episodes_per_task is {episodes_per_task}; "
                          "give one of them (one episode per init state)")
    chosen = suite.tasks() if task_ids is None else [suite.task(t) for t in task_ids]
    episodes = []
    for task in chosen:
        available = suite.num_init_states(task)
        beyond = [s for s in states if not 0 <= s < available]
        if beyond:
            raise ConfigError(f"task {task.task_id} of {suite.name!r} has init states 0..{available - 1}; "
                              f"init_states asks for {beyond[:5]}")
        episodes += [Episode(suite.name, task.task_id, s, seed) for s in states]
    return episodes


def _policy(policy_or_checkpoint: Policy | str | Path, policy: str, policy_kwargs: dict[str, Any]) -> tuple[Policy, bool]:
    """The policy to run and whether this call built it (then it also closes it)."""
    if isinstance(policy_or_checkpoint, Policy):
        if policy_kwargs:
            raise ConfigError("policy_kwargs apply to a checkpoint folder; a Policy object is already built")
        return policy_or_checkpoint, False
    folder = Path(policy_or_checkpoint)
    if not folder.is_dir():
        raise ConfigError(f"checkpoint {folder} is not a directory (expected config.json, model.safetensors, ...)")
    load_builtin_entries()
    POLICIES.check(policy)
    return POLICIES.build(policy, checkpoint=str(folder.resolve()), **policy_kwargs), True


def summarize(records: Sequence[dict[str, Any]], label: str, suite: str, checkpoint_hash: str | None,
              wall_time_s: float, ran: int) -> EvaluationSummary:
    n = len(records)
    successes = sum(bool(r["success"]) for r in records)
    low, high = wilson_interval(successes, n) if n else (0.0, 0.0)
    tasks = sorted({r["task_id"] for r in records})
    per_task = tuple(TaskSummary(t, sum(r["task_id"] == t for r in records),
                                 sum(bool(r["success"]) for r in records if r["task_id"] == t)) for t in tasks)
    return EvaluationSummary(
        label=label, suite=suite, checkpoint_hash=checkpoint_hash, episodes=n, successes=successes,
        policy_errors=sum(r["status"] == POLICY_ERROR for r in records),
        env_errors=sum(r["status"] == ENV_ERROR for r in records), interval=(float(low), float(high)),
        init_states=tuple(sorted({r["init_index"] for r in records})), per_task=per_task,
        wall_time_s=round(wall_time_s, 3), ran=ran)


def evaluate(policy_or_checkpoint: Policy | str | Path, *, suite: str,
             tasks: Sequence[int] | str | None = None, episodes_per_task: int | None = None,
             init_states: Sequence[int] | str | None = None, envs_per_worker: int = 1,
             policy: str = "lamp", policy_kwargs: dict[str, Any] | None = None,
             suite_kwargs: dict[str, Any] | None = None, label: str | None = None, seed: int = 0,
             out: str | Path | None = None, env_retries: int = DEFAULT_ENV_RETRIES,
             env_timeout_s: float = 300.0) -> Evaluation:
    """Run a policy (a harness `Policy`, or a checkpoint folder loaded as registry policy `policy`) on
    `suite` and return its records and summary. See the module docstring."""
    started = time.perf_counter()
    spec = SuiteSpec(suite, dict(suite_kwargs or {}))
    built_suite = spec.build()
    episodes = evaluation_episodes(built_suite, tasks, episodes_per_task, init_states, seed)
    runner, owned = _policy(policy_or_checkpoint, policy, dict(policy_kwargs or {}))
    try:
        identity = runner.describe()
        name = label or identity.get("policy_config", {}).get("label") or runner.name
        keys = {EpisodeKey.of(name, e) for e in episodes}
        store = EpisodeStore(out) if out is not None else None
        todo, kept = episodes, []
        if store is not None:
            check_label_protocol(store, name, suite, protocol_id(built_suite.protocol_fields()))
            check_label_identity(store, name, identity.get("checkpoint_hash"))
            kept = [r for r in store.records() if record_key(r) in keys and r["status"] != ENV_ERROR]
            done = {record_key(r) for r in kept}
            todo = [e for e in episodes if EpisodeKey.of(name, e) not in done]
        writer = store.writer() if store is not None and todo else None
        options = RunOptions(envs_per_worker=max(1, envs_per_worker), env_retries=env_retries,
                             env_timeout_s=env_timeout_s)
        try:
            fresh = run_episodes(runner, spec if envs_per_worker > 1 else built_suite, todo,
                                 writer.append if writer is not None else (lambda record: None),
                                 label=name, options=options, built=built_suite)
        finally:
            if writer is not None:
                writer.close()
    finally:
        if owned:
            runner.close()
    records = sorted(kept + fresh, key=lambda r: (r["task_id"], r["init_index"], r["seed"]))
    summary = summarize(records, name, suite, identity.get("checkpoint_hash"), time.perf_counter() - started,
                        len(fresh))
    return Evaluation(records=records, summary=summary)

