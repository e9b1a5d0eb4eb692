"""The privileged scripted policy (`oracle`) and the do-nothing baseline (`noop`).

The oracle reads simulator state from `Observation.privileged` (what a suite delivers when
`PolicyNeeds.privileged` is set; see suites/libero.py for the keys) and runs one state machine per batch
slot, dispatched on `privileged["robot"]`. A script for another robot registers itself with
`@register_script("<robot>")` in `lamp_bench.models.oracle.<robot>`, which is imported on first use
(`panda.py` for LIBERO, `widowx.py` for SimplerEnv-WidowX).
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Sequence

import numpy as np
from lamp_bench.harness.policy import Observation, Policy, PolicyNeeds, Task, slot_indices
from lamp_bench.harness.registry import register_policy
from lamp_bench.models.oracle.base import NOOP_ACTION, OracleConfig, Script, script_for


@register_policy("oracle")
class OraclePolicy(Policy):
    """Privileged scripted pick-and-place (reads simulator state; an upper bound, not a learned policy)."""

    name = "oracle"
    needs = PolicyNeeds(cameras=(), privileged=True, proprio=True)

    def __init__(self, config: OracleConfig | None = None, **overrides: Any):
        self.config = config or OracleConfig(**overrides)
        self._scripts: dict[int, Script | None] = {}
        self._seeds: dict[int, int] = {}

    def reset(self, tasks: Sequence[Task], seeds: Sequence[int], slots: Sequence[int] | None = None) -> None:
        for slot, seed in zip(slot_indices(len(tasks), slots), seeds):
            self._scripts[slot] = None  # built at the first observation, which names the robot
            self._seeds[slot] = seed

    def act(self, observations: Sequence[Observation], slots: Sequence[int] | None = None) -> np.ndarray:
        actions = np.zeros((len(observations), 7), dtype=np.float32)
        for row, (slot, obs) in enumerate(zip(slot_indices(len(observations), slots), observations)):
            state = obs.privileged
            if not state:
                raise ValueError("the oracle needs privileged simulator state; the suite delivered none")
            if self._scripts.get(slot) is None:
                self._scripts[slot] = script_for(state["robot"])(self.config, self._seeds.get(slot, 0))
            actions[row] = np.clip(self._scripts[slot].act(state), -1.0, 1.0)
        return actions

    def describe(self) -> dict[str, Any]:
        return {"policy": self.name, "policy_config": asdict(self.config), "checkpoint_hash": None}


@register_policy("noop")
class NoopPolicy(Policy):
    """Holds still with the gripper open; renders what it is told to (harness-overhead baseline)."""

    name = "noop"

    def __init__(self, cameras: Sequence[str] = ("third_person",), image_size: int = 224, **needs: Any):
        self.needs = PolicyNeeds(cameras=tuple(cameras), image_size=image_size, **needs)

    def reset(self, tasks: Sequence[Task], seeds: Sequence[int], slots: Sequence[int] | None = None) -> None:
        pass

    def act(self, observations: Sequence[Observation], slots: Sequence[int] | None = None) -> np.ndarray:
        return np.tile(NOOP_ACTION, (len(observations), 1))

    def describe(self) -> dict[str, Any]:
        return {"policy": self.name, "policy_config": {"needs": asdict(self.needs)}, "checkpoint_hash": None}
