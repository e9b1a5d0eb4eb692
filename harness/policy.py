"""The policy interface every evaluated model implements (think LeRobot's reset / select_action, batched).

Action convention (suite-agnostic, one row per environment of the batch), float32 array of shape (B, 7):
    [dx, dy, dz, droll, dpitch, dyaw, gripper]
The first six are end-effector deltas in the controller's normalised units, each in [-1, 1]
(LIBERO's OSC_POSE scale: 1.0 = 5 cm / 0.5 rad per step); rotation is axis-angle.
gripper: -1 = open, +1 = close. Suites convert this form to their simulator's convention.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

ACTION_DIM = 7
CAMERA_ROLES = ("third_person", "wrist")


@dataclass(frozen=True)
class PolicyNeeds:
    """What a policy consumes, so a suite renders and computes only that."""

    cameras: tuple[str, ...] = ("third_person",)  # roles from CAMERA_ROLES; each comes with intrinsics and extrinsics
    image_size: int = 224  # square side the suite resizes images to
    depth: bool = False  # metric depth (metres) per camera
    segmentation: bool = False  # per-pixel body ids per camera
    proprio: bool = False  # end-effector position, quaternion, gripper joints
    privileged: bool = False  # simulator state for scripted policies (object poses, goals)


@dataclass(frozen=True)
class Task:
    """One task of a suite. `extra` carries suite-specific labels (LIBERO-Plus category, level, ...)."""

    suite: str
    task_id: int
    name: str
    instruction: str
    dataset: str = ""  # key of the action-normalisation statistics (OpenVLA's `unnorm_key`)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Observation:
    """What one environment shows a policy at one step. Images are upright (H, W, 3) uint8."""

    instruction: str
    images: dict[str, np.ndarray] = field(default_factory=dict)  # role -> (S, S, 3) uint8
    depth: dict[str, np.ndarray] = field(default_factory=dict)  # role -> (S, S) float32 metres
    intrinsics: dict[str, np.ndarray] = field(default_factory=dict)  # role -> (3, 3) for the S x S image
    extrinsics: dict[str, np.ndarray] = field(default_factory=dict)  # role -> (4, 4) camera-to-world
    segmentation: dict[str, np.ndarray] = field(default_factory=dict)  # role -> (S, S) int32 body ids
    proprio: np.ndarray | None = None  # (9,) eef xyz, eef quat xyzw, gripper joints
    privileged: dict[str, Any] = field(default_factory=dict)


class Policy(ABC):
    """A batched policy. Slot i of a batch is one environment; `slots` names which slots a call covers
    (default: 0..B-1), so a runner can restart one finished environment while the others go on."""

    name: str = "policy"
    needs: PolicyNeeds = PolicyNeeds()
    # Set by the runner (RunOptions.record_motion) before the first act: keep what motion_diagnostics returns.
    keep_motion_diagnostics: bool = False

    @abstractmethod
    def reset(self, tasks: Sequence[Task], seeds: Sequence[int], slots: Sequence[int] | None = None) -> None:
        """Start a new episode in each given slot (seeds make any sampling per episode reproducible)."""

    @abstractmethod
    def act(self, observations: Sequence[Observation], slots: Sequence[int] | None = None) -> np.ndarray:
        """(B, 7) actions in the convention above for the observations of the given slots."""

    def describe(self) -> dict[str, Any]:
        """Config and identity recorded with every episode (name, config, checkpoint hash)."""
        return {"policy": self.name, "policy_config": {}, "checkpoint_hash": None}

    def motion_diagnostics(self, slots: Sequence[int]) -> list[dict[str, np.ndarray] | None]:
        """What the motion pathway saw and predicted in the last `act` call, per given slot, or None
        where there is nothing (the default: a policy without a motion pathway). Only a policy whose
        `keep_motion_diagnostics` is true keeps them; the default stepping path computes nothing extra.
        A dict holds "depth" (S, S) metres, "uv" (Np, 2) the lifted points' pixel positions and
        "uv_flowed" (Np, 2) where the predicted 1-step scene flow moves them (NaN behind the camera); it
        may add "points" and "flow" (Np, 3), camera frame, metres."""
        return [None] * len(slots)

    def close(self) -> None:
        """Free resources (processes, GPU memory)."""


def slot_indices(n: int, slots: Sequence[int] | None) -> list[int]:
    if slots is None:
        return list(range(n))
    if len(slots) != n:
        raise ValueError(f"{n} items for {len(slots)} slots")
    return list(slots)
