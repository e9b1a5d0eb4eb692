"""Checkpoint selection without selection bias: evaluate intermediate weights on validation init states,
keep the best, and report on other init states.

`train_with_selection(config, select)` trains (resumably, models.training.loop.train) and, every
`select.every` optimizer steps of the last stage, saves the weights to `<out>/selection/step_<N>/` and
evaluates them with `harness.evaluate.evaluate` on the validation init states. After training the final
weights are scored too; the best (highest success, ties to the later step) become the checkpoint in
`<out>`, and `lineage.json` records the selection: every step's score, the validation init states, the
chosen step. The evaluation that is reported must use init states disjoint from these
(`check_disjoint`; the sweep refuses an overlap when it loads).

Resumable: scores are kept in `<out>/selection/scores.json` as they are measured; a killed run resumes
training from its last save, re-reaches the same steps with the same weights (the trainer is
deterministic) and skips the steps already scored. Evaluation runs with the torch RNG forked, so
selecting does not change the training run's random stream.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from lamp_bench.harness.config import ConfigError, parse_ids

SELECTION_DIR = "selection"
SCORES = "scores.json"
SELECTED = "selected.json"


@dataclass(frozen=True)
class Selection:
    """`select = {every = N, episodes = M, init_states = "10-19"}` of a training step."""

    every: int
    init_states: tuple[int, ...]
    suite: str
    tasks: tuple[int, ...] | None = None  # None: every task of the suite
    episodes: int | None = None  # per task, the first M of init_states (None: all of them)
    envs_per_worker: int = 1
    suite_kwargs: Mapping[str, Any] | None = None

    @property
    def validation_states(self) -> tuple[int, ...]:
        return self.init_states[: self.episodes] if self.episodes else self.init_states

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "suite_kwargs": dict(self.suite_kwargs or {})}


SELECT_KEYS = {"every", "episodes", "init_states", "suite", "tasks", "envs_per_worker"}


def parse_selection(raw: Mapping[str, Any], where: str, suite: str, tasks: Sequence[int] | None,
                    suite_kwargs: Mapping[str, Any] | None = None) -> Selection:
    """The `select` table of a training step; suite and tasks default to those of its demonstrations."""
    unknown = sorted(set(raw) - SELECT_KEYS)
    if unknown:
        raise ConfigError(f"{where}: select has unknown keys {unknown}; known: {sorted(SELECT_KEYS)}")
    if "every" not in raw or "init_states" not in raw:
        raise ConfigError(f"{where}: select needs every = N (steps) and init_states = \"10-19\" (validation states)")
    every = raw["every"]
    if not isinstance(every, int) or every < 1:
        raise ConfigError(f"{where}: select.every must be a whole number of steps >= 1; got {every!r}")
    states = _ids(raw["init_states"], f"{where}: select.init_states")
    episodes = raw.get("episodes")
    if episodes is not None and (not isinstance(episodes, int) or not 1 <= episodes <= len(states)):
        raise ConfigError(f"{where}: select.episodes must be 1..{len(states)} (episodes per task taken from "
                          f"select.init_states); got {episodes!r}")
    task_ids = _ids(raw["tasks"], f"{where}: select.tasks") if "tasks" in raw else (tuple(tasks) if tasks else None)
    return Selection(every=every, init_states=states, suite=str(raw.get("suite", suite)), tasks=task_ids,
                     episodes=episodes, envs_per_worker=int(raw.get("envs_per_worker", 1)),
                     suite_kwargs=dict(suite_kwargs or {}))


def _ids(value: Any, what: str) -> tuple[int, ...]:
    if isinstance(value, str):
        ids = parse_ids(value, what)
        if ids is None:
            raise ConfigError(f"{what} must name init states (\"10-19\" or [10, 11]), not all of them")
        return tuple(ids)
    if isinstance(value, list) and value and all(isinstance(v, int) and v >= 0 for v in value):
        return tuple(value)
    raise ConfigError(f"{what} must be ids like [10, 11] or a range like \"10-19\"; got {value!r}")


def check_disjoint(selection_states: Sequence[int], evaluation_states: Sequence[int], where: str) -> None:
    """Selection and the reported evaluation never share an init state (else the score is biased)."""
    shared = sorted(set(selection_states) & set(evaluation_states))
    if shared:
        raise ConfigError(f"{where}: evaluation init states {_span(shared)} were used to select the checkpoint; "
                          "select on init states the evaluation does not use (a cell evaluates states 0..episodes_per_task-1)")


def _span(ids: Sequence[int]) -> str:
    return ",".join(map(str, ids[:8])) + (",..." if len(ids) > 8 else "")


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.is_file() else default


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))  # suite kwargs may hold objects (a protocol)
    os.replace(tmp, path)


class Selector:
    """The trainer's `on_step` hook: scores the weights every `every` steps of the last stage."""

    def __init__(self, config, selection: Selection, last_stage: str, total_steps: int):
        self.config, self.selection, self.last_stage, self.total = config, selection, last_stage, total_steps
        self.folder = Path(config.out) / SELECTION_DIR
        self.folder.mkdir(parents=True, exist_ok=True)
        self.scores: dict[str, Any] = _read_json(self.folder / SCORES, {})

    def __call__(self, run, stage: str, step: int) -> None:
        if stage != self.last_stage or step % self.selection.every or step >= self.total:
            return  # the final weights are scored after training, from the checkpoint itself
        if str(step) in self.scores:
            return  # scored before a kill; the resumed run reached the same weights
        import torch

        from lamp_bench.models.lamp.checkpoint import save_checkpoint

        target = self.folder / f"step_{step}"
        shutil.rmtree(target, ignore_errors=True)
        run.model.eval()
        try:
            save_checkpoint(run.model, target, run.tokenizer, run.statistics)
        finally:
            run.model.train()
        with torch.random.fork_rng(devices=[]):
            self.score(step, target)

    def score(self, step: int, folder: Path) -> None:
        from lamp_bench.harness.evaluate import evaluate

        s = self.selection
        result = evaluate(folder, policy=self.config.policy, suite=s.suite, tasks=list(s.tasks) if s.tasks else None,
                          init_states=list(s.validation_states), envs_per_worker=s.envs_per_worker,
                          suite_kwargs=dict(s.suite_kwargs or {}), label=f"select-step-{step}")
        self.scores[str(step)] = {"step": step, "folder": str(folder), **result.summary.to_dict()}
        _write_json(self.folder / SCORES, self.scores)


def best_step(scores: Mapping[str, Mapping[str, Any]]) -> int:
    """Highest validation success; ties go to the later step (more training, same evidence)."""
    return max((v["successes"], v["step"]) for v in scores.values())[1]


def train_with_selection(config, selection: Selection | None) -> Path:
    """Train (resumably); with a selection, leave the best scored weights in `config.out`."""
    from lamp_bench.models.training.lineage import write_lineage
    from lamp_bench.models.training.loop import train

    out = Path(config.out)
    if selection is None:
        return train(config)
    stages = {"1": ["1"], "2": ["2"], "both": ["1", "2"]}[config.stage]
    last = stages[-1]
    total = getattr(config, f"stage{last}_steps")
    if last == "1":
        raise ConfigError("checkpoint selection evaluates the policy, which stage 1 (motion expert alone) does not "
                          "train; select with stage = \"2\" or \"both\"")
    if (out / SELECTION_DIR / SELECTED).is_file():
        return out
    selector = Selector(config, selection, last, total)
    train(config, on_step=selector)
    final = selector.folder / f"step_{total}"
    if str(total) not in selector.scores:
        # a copy of the final weights, taken before the best ones may replace them in `out`
        shutil.rmtree(final, ignore_errors=True)
        shutil.copytree(out, final, ignore=shutil.ignore_patterns(SELECTION_DIR, "train_state*", "*.csv", "events*",
                                                                  "lineage.json"))
        selector.score(total, final)
    chosen = best_step(selector.scores)
    source = Path(selector.scores[str(chosen)]["folder"])
    if chosen != total:
        for item in source.iterdir():
            if item.is_file():
                shutil.copy2(item, out / item.name)
    record = {"selection": selection.to_dict(), "validation_init_states": list(selection.validation_states),
              "chosen_step": chosen, "final_step": total,
              "scores": [{k: v[k] for k in ("step", "episodes", "successes", "success_rate", "interval")}
                         for v in sorted(selector.scores.values(), key=lambda v: v["step"])]}
    write_lineage(config, out, selection=record)
    _write_json(selector.folder / SELECTED, record)
    return out
