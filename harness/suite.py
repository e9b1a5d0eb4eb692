"""The suite interface: a benchmark enumerates tasks and episodes, builds environments, owns its
protocol constants and decides success."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.policy import Observation, PolicyNeeds, Task


@dataclass(frozen=True, order=True)
class Episode:
    """One evaluation episode; the tuple is its identity in the results store."""

    suite: str
    task_id: int
    init_index: int  # which of the task's fixed initial states (LIBERO) / configurations (SimplerEnv)
    seed: int

    def key(self) -> str:
        return f"{self.suite}/{self.task_id}/{self.init_index}/{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StepResult:
    observation: Observation
    success: bool  # the suite's success predicate at this step
    done: bool = False  # the suite ends the episode (success or its own terminal condition)
    info: dict[str, Any] = field(default_factory=dict)  # suite metrics recorded with the episode


@dataclass(frozen=True)
class SuiteSpec:
    """How to build a suite: registry name and keyword arguments. Picklable, so the runner builds the
    suite from the same spec in this process and in every environment process (one source of truth)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict, hash=False)

    def build(self) -> "Suite":
        from lamp_bench.harness.registry import SUITES, load_builtin_entries

        load_builtin_entries()
        return SUITES.build(self.name, **self.kwargs)


class SuiteEnv(ABC):
    """One simulator instance, reused across episodes (and tasks) of a suite."""

    @abstractmethod
    def reset(self, episode: Episode) -> Observation:
        """Load the episode's task and initial state, run the protocol's settle steps, observe."""

    @abstractmethod
    def step(self, action: np.ndarray) -> StepResult:
        """Apply one action in the suite-agnostic 7-DoF convention (see harness.policy)."""

    def episode_info(self) -> dict[str, Any]:
        """Metrics of the finished episode beyond success (partial success, ...)."""
        return {}

    def close(self) -> None:
        pass


class Suite(ABC):
    name: str = "suite"
    description: str = ""

    @abstractmethod
    def tasks(self) -> list[Task]:
        ...

    @abstractmethod
    def max_steps(self, task: Task) -> int:
        """Policy steps allowed after the settle phase."""

    @abstractmethod
    def num_init_states(self, task: Task) -> int:
        ...

    @abstractmethod
    def make_env(self, needs: PolicyNeeds) -> SuiteEnv:
        ...

    def provenance(self) -> dict[str, Any]:
        """Asset pack identity, simulator versions and backend, recorded with every episode."""
        return {}

    def protocol_fields(self) -> dict[str, Any]:
        """Everything that defines an episode's conditions (max steps, settle steps, render size, cameras,
        asset pack identity, perturbation code version, ...): the records' `protocol` id is its hash, and
        resume refuses to mix two protocols under one label. Suites with protocol constants extend this."""
        return {"suite": self.name}

    def task(self, task_id: int) -> Task:
        tasks = self.tasks()
        if not 0 <= task_id < len(tasks):
            raise ConfigError(f"suite {self.name!r} has tasks 0..{len(tasks) - 1}; got task id {task_id}")
        return tasks[task_id]

    def default_episodes_per_task(self) -> int:
        return 50

    def episodes(
        self,
        task_ids: Sequence[int] | None = None,
        episodes_per_task: int | None = None,
        seed: int = 0,
    ) -> list[Episode]:
        """Episode i of a task uses the task's fixed initial state i (OpenVLA's LIBERO protocol)."""
        tasks = self.tasks() if task_ids is None else [self.task(t) for t in task_ids]
        n = episodes_per_task or self.default_episodes_per_task()
        out = []
        for task in tasks:
            available = self.num_init_states(task)
            if n > available:
                raise ConfigError(
                    f"task {task.task_id} of {self.name!r} has {available} initial states; "
                    f"asked for {n} episodes per task (use --episodes-per-task <= {available})"
                )
            out += [Episode(self.name, task.task_id, i, seed) for i in range(n)]
        return out
