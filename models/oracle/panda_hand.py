"""The Panda hand as the LIBERO oracle script sees it: its size and the orientations it commands."""
from __future__ import annotations

import numpy as np
from lamp_bench.models.oracle.base import yaw_down

DOWN = np.diag([1.0, -1.0, -1.0])  # Panda hand pointing down, fingers closing along world y
GRIPPER_SPAN = 0.075  # widest object the Panda hand closes around (it opens 8 cm)
FINGERTIP_DEPTH = 0.018  # the grip site sits this far above the fingertips


def hand_down(yaw: float) -> np.ndarray:
    """Panda hand pointing down, turned by `yaw` about world z."""
    return yaw_down(yaw, DOWN)


def facing(direction: np.ndarray) -> np.ndarray:
    """Hand pointing horizontally along `direction` (its approach axis), fingers closing vertically."""
    z = np.array([direction[0], direction[1], 0.0]) / np.linalg.norm(direction[:2])
    y = np.array([0.0, 0.0, 1.0])
    return np.stack([np.cross(y, z), y, z], axis=1)
