"""LIBERO's evaluation protocol and task description, shared by the suite (suites/libero.py) and its
environment (suites/libero_env.py): OpenVLA's step budgets and settle phase, the camera roles, the no-op
action, and `LiberoTaskSpec`, everything an environment needs to run one task."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SUITE_NAMES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
CAMERAS = {"third_person": "agentview", "wrist": "robot0_eye_in_hand"}
NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)


@dataclass(frozen=True)
class LiberoProtocol:
    """OpenVLA's LIBERO evaluation protocol (experiments/robot/libero/run_libero_eval.py)."""

    max_steps: int = 220  # policy steps after the settle phase
    settle_steps: int = 10  # no-op steps inside reset: objects drop onto the table
    render_size: int = 256  # rendered square side, before the resize to PolicyNeeds.image_size
    episodes_per_task: int = 50  # one per fixed initial state

    @classmethod
    def for_suite(cls, suite: str, **overrides: Any) -> "LiberoProtocol":
        return cls(max_steps=MAX_STEPS.get(suite, cls.max_steps), **overrides)


@dataclass(frozen=True, eq=False)
class LiberoTaskSpec:
    """Everything an environment needs to run one task, independent of where the task came from."""

    bddl_file: Path
    init_states: np.ndarray | None  # (N, state size) float64 MuJoCo states; None: LIBERO samples the layout
    instruction: str
    build_key: str = ""  # episodes of specs with equal keys share one simulator; default: the BDDL path

    def __post_init__(self) -> None:
        if not self.build_key:
            object.__setattr__(self, "build_key", str(self.bddl_file))
