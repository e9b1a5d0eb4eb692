"""`lamp-bench run ... --until decided --against LABEL`: evaluate in rounds until the paired comparison
with the baseline is decided, or the budget is spent.

The episode pool is the run's episodes that the baseline already ran (pairs need both), in a fixed
order: init state 0 of every task, then init state 1 of every task, ... (`pool_order`), so every round
covers the tasks evenly, and two policies evaluated this way run the same episodes. Round k runs the
pool's first k * round_size episodes (those already in the store are skipped, so a killed run resumes
where it stopped), then the group-sequential test of `results.sequential` looks at every pair so far.
The decision (with every look, the design and the repeated interval) is written after each look to
<results>/sequential/<label>-vs-<against>-<suite>.json, which `lamp-bench report` shows.

A sweep cell uses the same loop: `run_until_decided(cell_spec, options, execute)` with the cell's
JobSpec (all its episodes) and an `execute` that runs one round's JobSpec on the sweep's executor
(split into chunk jobs and waited for, as the sweep does for a whole cell).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.executors import JobSpec, pending_episodes, run_inline, run_local, split_into_jobs
from lamp_bench.harness.suite import Episode
from lamp_bench.results import sequential, stats
from lamp_bench.results.store import EpisodeStore

UNTIL = ("decided",)
DEFAULT_ROUNDS = 5


@dataclass(frozen=True)
class SequentialOptions:
    against: str
    budget: int | None = None  # pairs at most (default: the whole pool)
    round_size: int | None = None  # episodes added per round (default: budget / 5)
    alpha: float = round(stats.ALPHA, 12)  # 0.05, not 1 - 0.95's 0.05000000000000004


def check_request(until: str | None, against: str | None, results_dir: str | Path) -> None:
    """The CLI's --until / --against, checked before anything is built: a baseline must be in the results."""
    if until is None and against is not None:
        raise ConfigError("--against LABEL is the baseline of --until decided; add --until decided")
    if until is not None and until not in UNTIL:
        raise ConfigError(f"--until accepts {', '.join(UNTIL)}; got {until!r}")
    if until is not None and not against:
        raise ConfigError("--until decided needs --against LABEL: the baseline label already in the results directory")
    if until is not None:
        labels = {r["label"] for r in EpisodeStore(results_dir).iter_raw()}
        if against not in labels:
            raise ConfigError(f"--against {against!r}: no episodes of that label in {results_dir} "
                              f"(labels there: {', '.join(sorted(labels)) or 'none'}); run the baseline first")


def pool_order(episodes: list[Episode]) -> list[Episode]:
    """The fixed order rounds draw episodes in: by init state, then task (every round covers every task)."""
    return sorted(episodes, key=lambda e: (e.seed, e.init_index, e.task_id))


def _outcomes(store: EpisodeStore, label: str, suite: str) -> dict[tuple, bool]:
    return {(r["task_id"], r["init_index"], r["seed"]): bool(r["success"])
            for r in store.records() if r["label"] == label and r["suite"] == suite}


def baseline_pool(spec: JobSpec, against: str, store: EpisodeStore) -> tuple[list[Episode], dict[tuple, bool]]:
    """The run's episodes the baseline has, in pool order, and the baseline's outcomes."""
    if against == spec.run_label:
        raise ConfigError(f"--against {against!r} is the label being run; compare against another label")
    baseline = _outcomes(store, against, spec.suite)
    pool = [e for e in pool_order(spec.episodes) if (e.task_id, e.init_index, e.seed) in baseline]
    if not pool:
        raise ConfigError(f"--against {against!r} has none of this run's episodes on {spec.suite} (same tasks, init "
                          "states and --seed): run the baseline on them first")
    return pool, baseline


def design_for(options: SequentialOptions, pool_size: int) -> sequential.Design:
    budget = min(options.budget or pool_size, pool_size)
    round_size = min(options.round_size or math.ceil(budget / DEFAULT_ROUNDS), budget)
    return sequential.Design(budget=budget, round_size=round_size, alpha=options.alpha)


def check_same_design(results_dir: str | Path, decision: sequential.Decision) -> None:
    """A resumed evaluation must keep its design: changing budget or rounds after a look voids the test."""
    path = sequential.decision_path(results_dir, decision.label, decision.against, decision.suite)
    if not path.exists():
        return
    earlier = sequential.load_decision(path).design
    if earlier != decision.design:
        raise ConfigError(f"{path} was started with budget {earlier.budget}, round size {earlier.round_size}, "
                          f"alpha {earlier.alpha}; resume with the same --budget/--round-size (or delete the file "
                          "to start a new evaluation)")


def paired_counts(pool: list[Episode], baseline: dict[tuple, bool], ours: dict[tuple, bool]) -> tuple[int, int, int]:
    """(pairs, ours only succeeded, baseline only succeeded) over the given pool prefix."""
    n = b = c = 0
    for e in pool:
        key = (e.task_id, e.init_index, e.seed)
        if key not in ours:
            continue
        n += 1
        b += ours[key] and not baseline[key]
        c += baseline[key] and not ours[key]
    return n, b, c


def run_until_decided(spec: JobSpec, options: SequentialOptions, execute: Callable[[JobSpec], None],
                      say: Callable[[str], None] = lambda text: None) -> sequential.Decision:
    """Rounds of episodes until the comparison of spec's label with options.against is decided."""
    store = EpisodeStore(spec.results_dir)
    pool, baseline = baseline_pool(spec, options.against, store)
    design = design_for(options, len(pool))
    decision = sequential.Decision(spec.run_label, options.against, spec.suite, design)
    check_same_design(spec.results_dir, decision)
    say(f"{spec.run_label} vs {options.against} on {spec.suite}: up to {design.budget} paired episodes "
        f"in rounds of {design.round_size} (pool {len(pool)}; group-sequential, alpha {design.alpha})")
    counts: list[tuple[int, int, int]] = []
    for size in design.look_sizes():
        round_spec = JobSpec(**{**spec.__dict__, "episodes": pool[:size]})
        if pending_episodes(round_spec, store):
            execute(round_spec)
        n, b, c = paired_counts(pool[:size], baseline, _outcomes(store, spec.run_label, spec.suite))
        last = size >= design.budget
        if n == 0 or counts and n <= counts[-1][0]:
            if not last:
                continue  # no new pair this round (its episodes failed to record): no new look
            if not counts:
                raise ConfigError(f"no episode of {spec.run_label!r} was recorded; see the errors above")
        else:
            counts.append((n, b, c))
        sequential.decide(decision, counts, exhausted=last)
        sequential.save_decision(spec.results_dir, decision)
        say(decision.summary())
        if decision.finished:
            break
    return decision


def executor_function(executor: str, workers: int, results_dir: str | Path) -> Callable[[JobSpec], None]:
    """One round on the run command's executor (inline, or local worker processes)."""
    if executor == "inline":
        return lambda spec: run_inline([spec]) and None
    log_dir = Path(results_dir) / "jobs" / "local"
    return lambda spec: run_local(split_into_jobs(spec, workers), workers, log_dir) and None
