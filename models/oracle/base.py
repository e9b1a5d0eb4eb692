"""What every oracle script shares: the action conventions, the policy's configuration, the per-robot script
registry, and `PhaseScript`, the phase state machine the Panda and WidowX scripts are built on."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from scipy.spatial.transform import Rotation

NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float32)
OPEN, CLOSE = -1.0, 1.0

_SCRIPTS: dict[str, Callable[..., "Script"]] = {}


def register_script(robot: str) -> Callable:
    def decorator(factory: Callable[..., "Script"]) -> Callable[..., "Script"]:
        _SCRIPTS[robot] = factory
        return factory

    return decorator


def script_for(robot: str) -> Callable[..., "Script"]:
    """The script factory of a robot; its module, `lamp_bench.models.oracle.<robot>`, is imported on first use."""
    if robot not in _SCRIPTS:
        try:
            importlib.import_module(f"lamp_bench.models.oracle.{robot}")
        except ModuleNotFoundError:
            pass
    if robot not in _SCRIPTS:
        raise ValueError(f"the oracle has no script for robot {robot!r}; scripts: {', '.join(sorted(_SCRIPTS))}")
    return _SCRIPTS[robot]


class Script:
    """One episode of one slot: privileged state in, one 7-DoF action out."""

    def act(self, state: dict[str, Any]) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class OracleConfig:
    gain: float = 10.0  # position action per metre of error (1.0 = 5 cm/step, so 10/m is 0.5 m/s at 1 m)
    rot_gain: float = 2.0  # rotation action per radian of error (1.0 = 0.5 rad/step)
    max_speed: float = 1.0  # clip of the position action
    min_speed: float = 0.2  # floor of the position action while more than 1 mm from the target
    hover: float = 0.08  # height above the grasp / place point where descents start
    carry_clearance: float = 0.04  # object bottom above the highest thing between pick and place
    place_gap: float = 0.012  # object bottom above the target surface at release
    grasp_steps: int = 12  # steps with the gripper closing before lifting
    release_steps: int = 10
    max_retries: int = 2  # re-grasps after a grasp that lost the object
    action_noise: float = 0.0  # std of Gaussian noise on the arm action (demonstration diversity)


def yaw_down(yaw: float, down: np.ndarray) -> np.ndarray:
    """A hand pointing down (`down`: its orientation at yaw 0), turned by `yaw` about world z."""
    return Rotation.from_euler("z", yaw).as_matrix() @ down


class PhaseScript(Script):
    """A script as a state machine over named phases: the method `_<phase>` returns the step's action and may
    switch phase with `_goto`; `steps_in_phase` counts the steps spent in the current phase. The seed drives
    only the optional action noise, so a script is deterministic without it."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.phase = "plan"
        self.steps_in_phase = 0
        self.retries = 0

    def _goto(self, phase: str) -> None:
        self.phase, self.steps_in_phase = phase, 0

    def _near(self, s, target: np.ndarray, tol: float) -> bool:
        """The measured hand is within `tol` metres of `target`."""
        return bool(np.linalg.norm(target - s["eef_pos"]) < tol)

    def _aligned(self, s, rot: np.ndarray, tol: float) -> bool:
        """The measured hand orientation is within `tol` radians of `rot`."""
        current = Rotation.from_quat(s["eef_quat"]).as_matrix()
        return bool(np.linalg.norm(Rotation.from_matrix(rot @ current.T).as_rotvec()) < tol)

    def _add_noise(self, action: np.ndarray, std: float) -> np.ndarray:
        """Gaussian noise on the arm's six action dimensions (demonstration diversity); none when std is 0."""
        if std > 0:
            action[:6] += self.rng.normal(0, std, 6)
        return action
