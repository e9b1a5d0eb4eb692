"""A pure-numpy suite ("fake") and a scripted policy ("scripted") for testing the harness without a
simulator: fast, deterministic, and able to fail on command.

Use them through the `fake_plugins` fixture (tests/conftest.py), which puts this folder on the path and
in $PYTHONPATH and names this module in $LAMP_BENCH_PLUGINS, so spawned environment processes, local
workers and Slurm jobs register them too. Everything is set through keyword arguments, so a test passes
them as `suite_kwargs` / `policy_kwargs` (or a sweep file's `kwargs`).

The fake suite: `tasks` tasks x `init_states` initial states. An episode succeeds at step
`success_step` when its init state is even (`succeed="even"`, or "all" / "none"), else it runs to
`max_steps` and fails. Observations carry an 8x8 image per requested camera (value = step count) and
a proprio vector. Faults (fire in the environment):
    fault       "raise" (the call raises), "crash" (the process exits: only with envs_per_worker > 1,
                in-process it would end the test), "hang" (sleeps `hang_s`: only with K > 1 and a short
                env timeout), "config" (raises ConfigError, as a missing asset would)
    fault_step  0 = during reset, s >= 1 = during the s-th step of the episode
    fault_on    [[task_id, init_index], ...] the episodes it fires in (default: all)
    fault_times fire at most this many times in total, counted across processes with marker files in
                `fault_dir` (so "fails once, then works in a fresh process" can be tested)
`version` is a protocol constant: change it to simulate a protocol change.

The scripted policy holds still (gripper open). Faults (fire in the policy):
    fault       "raise" (act raises), "nan", "out_of_range" or "bad_shape" (a bad action),
                "reset_raise" (reset raises), "config_error" (reset raises ConfigError, as a wrong
                statistics key does), "build" (the constructor raises)
    fault_step  the act call (1-based, per episode) it fires at
    fault_tasks task ids it fires in (default: all)
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.policy import ACTION_DIM, Observation, Policy, PolicyNeeds, Task, slot_indices
from lamp_bench.harness.registry import register_policy, register_suite
from lamp_bench.harness.suite import Episode, StepResult, Suite, SuiteEnv

FAULTS = (None, "raise", "crash", "hang", "config")
POLICY_FAULTS = (None, "raise", "nan", "out_of_range", "bad_shape", "reset_raise", "config_error", "build")


def _claim_fault(fault_dir: str | None, fault_times: int | None) -> bool:
    """Whether a fault may fire now; claims one of `fault_times` marker files atomically."""
    if fault_times is None:
        return True
    folder = Path(fault_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(fault_times):
        try:
            os.close(os.open(folder / f"fault-{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            continue
    return False


class FakeEnv(SuiteEnv):
    def __init__(self, suite: "FakeSuite", needs: PolicyNeeds):
        self.suite, self.needs = suite, needs
        self.episode: Episode | None = None
        self.steps = 0

    def _maybe_fault(self, step: int) -> None:
        s = self.suite
        if s.fault is None or step != s.fault_step:
            return
        if s.fault_on is not None and [self.episode.task_id, self.episode.init_index] not in s.fault_on:
            return
        if not _claim_fault(s.fault_dir, s.fault_times):
            return
        if s.fault == "raise":
            raise RuntimeError(f"fake environment fault at step {step}")
        if s.fault == "config":
            raise ConfigError(f"fake suite: asset folder missing (at step {step})")
        if s.fault == "crash":
            os._exit(3)
        if s.fault == "hang":
            time.sleep(s.hang_s)

    def _observe(self) -> Observation:
        side = 8
        images = {role: np.full((side, side, 3), self.steps % 256, dtype=np.uint8) for role in self.needs.cameras}
        task = self.suite.task(self.episode.task_id)
        return Observation(task.instruction, images=images, proprio=np.zeros(9, dtype=np.float32))

    def reset(self, episode: Episode) -> Observation:
        self.episode, self.steps = episode, 0
        self._maybe_fault(0)
        return self._observe()

    def step(self, action: np.ndarray) -> StepResult:
        self.steps += 1
        self._maybe_fault(self.steps)
        rule = self.suite.succeed
        wins = rule == "all" or rule == "even" and self.episode.init_index % 2 == 0
        success = wins and self.steps >= self.suite.success_step
        return StepResult(self._observe(), success, info={"last_gripper": float(action[-1])})

    def episode_info(self) -> dict[str, Any]:
        return {"fake_steps": self.steps}


@register_suite("fake", "pure-numpy test suite that can fail on command (tests/plugins/fake_suite.py)")
class FakeSuite(Suite):
    name = "fake"
    description = "pure-numpy test suite"

    def __init__(self, tasks: int = 2, init_states: int = 4, max_steps: int = 6, success_step: int = 3,
                 succeed: str = "even", fault: str | None = None, fault_step: int = 0,
                 fault_on: Sequence[Sequence[int]] | None = None, fault_times: int | None = None,
                 fault_dir: str | None = None, hang_s: float = 3600.0, version: str = "1"):
        if fault not in FAULTS:
            raise ConfigError(f"fake suite: fault must be one of {FAULTS}; got {fault!r}")
        if fault_times is not None and fault_dir is None:
            raise ConfigError("fake suite: fault_times needs fault_dir (where the count is kept)")
        self.n_tasks, self.init_states, self._max_steps = tasks, init_states, max_steps
        self.success_step, self.succeed, self.version = success_step, succeed, version
        self.fault, self.fault_step, self.fault_times, self.fault_dir = fault, fault_step, fault_times, fault_dir
        self.fault_on = None if fault_on is None else [list(map(int, e)) for e in fault_on]
        self.hang_s = hang_s
        self._tasks = [Task(self.name, i, f"fake_task_{i}", f"do fake thing {i}", dataset="fake",
                            extra={"category": "even" if i % 2 == 0 else "odd"}) for i in range(tasks)]

    def tasks(self) -> list[Task]:
        return self._tasks

    def max_steps(self, task: Task) -> int:
        return self._max_steps

    def num_init_states(self, task: Task) -> int:
        return self.init_states

    def default_episodes_per_task(self) -> int:
        return self.init_states

    def make_env(self, needs: PolicyNeeds) -> FakeEnv:
        return FakeEnv(self, needs)

    def provenance(self) -> dict[str, Any]:
        return {"suite": self.name, "backend": "numpy"}

    def protocol_fields(self) -> dict[str, Any]:
        return {"suite": self.name, "max_steps": self._max_steps, "success_step": self.success_step,
                "version": self.version}


@register_policy("scripted", "holds still; can raise or emit bad actions on command (tests/plugins/fake_suite.py)")
class ScriptedPolicy(Policy):
    name = "scripted"

    def __init__(self, fault: str | None = None, fault_step: int = 1, fault_tasks: Sequence[int] | None = None,
                 cameras: Sequence[str] = ("third_person",), checkpoint_hash: str | None = None):
        if fault not in POLICY_FAULTS:
            raise ConfigError(f"scripted policy: fault must be one of {POLICY_FAULTS}; got {fault!r}")
        if fault == "build":
            raise RuntimeError("scripted policy: told to fail while loading")
        self.fault, self.fault_step = fault, fault_step
        self.fault_tasks = None if fault_tasks is None else set(fault_tasks)
        self.needs = PolicyNeeds(cameras=tuple(cameras), image_size=8, proprio=True)
        self.checkpoint_hash = checkpoint_hash
        self._slot_task: dict[int, int] = {}
        self._calls: dict[int, int] = {}

    def _targets(self, task_id: int) -> bool:
        return self.fault_tasks is None or task_id in self.fault_tasks

    def describe(self) -> dict[str, Any]:
        return {"policy": self.name, "policy_config": {"fault": self.fault}, "checkpoint_hash": self.checkpoint_hash}

    def reset(self, tasks: Sequence[Task], seeds: Sequence[int], slots: Sequence[int] | None = None) -> None:
        for task, slot in zip(tasks, slot_indices(len(tasks), slots)):
            if self._targets(task.task_id) and self.fault == "config_error":
                raise ConfigError(f"scripted policy: no action statistics for dataset key {task.dataset!r}")
            if self._targets(task.task_id) and self.fault == "reset_raise":
                raise RuntimeError("scripted policy: reset failed")
            self._slot_task[slot], self._calls[slot] = task.task_id, 0

    def act(self, observations: Sequence[Observation], slots: Sequence[int] | None = None) -> np.ndarray:
        slots = slot_indices(len(observations), slots)
        actions = np.zeros((len(observations), ACTION_DIM), dtype=np.float32)
        actions[:, -1] = -1.0
        for row, slot in enumerate(slots):
            self._calls[slot] += 1
            if self._calls[slot] != self.fault_step or not self._targets(self._slot_task[slot]):
                continue
            if self.fault == "raise":
                raise RuntimeError("scripted policy: act failed")
            if self.fault == "nan":
                actions[row, 0] = np.nan
            if self.fault == "out_of_range":
                actions[row, 0] = 3.0
            if self.fault == "bad_shape":
                return actions[:, :3]
        return actions
