"""The oracle's WidowX script (SimplerEnv-WidowX): privileged top-down pick-and-place.

Registered with `register_script("widowx")` (models/oracle/base.py); the `oracle` policy imports this
module the first time an observation says `privileged["robot"] == "widowx"` (see suites/simpler_widowx.py
for the state it reads). One `WidowXPickPlace` runs one episode of one batch slot.

Script: for the goal ("on"/"in", source, target), turn the hand (top-down, fingers closing across the
source object's longest horizontal axis) over the source, descend, close, lift, carry so that the
*object* (tracked live) is over the target, lower it until it nearly touches, open and retreat; an object
left behind by the lift or dropped on the way is grasped again (twice at most). The grasp point is the
widest cross-section along the object's long axis nearest its centre of mass (`privileged` carries the
collision vertices), since a narrow neck, such as a spoon's, squeezes out of the WidowX's weak pinch. Position and rotation commands are deltas from the
controller's current target pose (what the WidowX controller adds them to), in the robot base frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from lamp_bench.models.oracle.base import (
    CLOSE,
    NOOP_ACTION,
    OPEN,
    OracleConfig,
    PhaseScript,
    register_script,
    yaw_down,
)
from scipy.spatial.transform import Rotation

POS_SCALE = 0.05  # metres per unit action (the harness convention; suites convert)
ROT_SCALE = 0.5  # radians per unit action
TIP_BELOW_HAND = 0.016  # fingertips below the end-effector link (ee_gripper_link) of the WidowX 250s
# Hand pointing down with yaw 0: fingers along world -z, closing along world y, palm facing world -x.
DOWN = np.array([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]])


@dataclass(frozen=True)
class WidowXScriptConfig:
    max_step: float = 0.04  # metres per control step (5 Hz) of the hand target
    carry_step: float = 0.03  # ... while holding the object (gentler: long objects pivot out of the pinch)
    hover: float = 0.06  # above the grasp point, where the descent starts
    max_tip_below_top: float = 0.035  # fingertips at the object's bottom, but no deeper below its top than this
    carry_clearance: float = 0.05  # object bottom above the target's top while carrying
    place_gap: float = 0.012  # object bottom above the target's top at release
    close_steps: int = 3
    release_steps: int = 2
    max_retries: int = 2
    max_width: float = 0.05  # widest cross-section the open fingers close around
    reach_tol: float = 0.012  # measured hand within this of a waypoint counts as there
    align_tol: float = 0.1  # radians between the measured and the wanted hand orientation before descending


def long_axis_yaw(obj: dict[str, Any]) -> float:
    """Yaw (world) of the object's longest horizontal extent, in (-pi/2, pi/2]."""
    axes = Rotation.from_quat(obj["quat"]).as_matrix() * np.asarray(obj["size"])[None, :]  # scaled local axes
    horizontal = axes[:2]
    best = int(np.argmax(np.linalg.norm(horizontal, axis=0)))
    yaw = float(np.arctan2(horizontal[1, best], horizontal[0, best]))
    return float(np.angle(np.exp(2j * yaw)) / 2)  # the grasp is the same at yaw and yaw + pi


@register_script("widowx")
class WidowXPickPlace(PhaseScript):
    def __init__(self, config: OracleConfig, seed: int, script: WidowXScriptConfig | None = None):
        super().__init__(seed)
        self.noise = config.action_noise
        self.cfg = script or WidowXScriptConfig()
        self.plan: dict[str, Any] = {}

    def act(self, s: dict[str, Any]) -> np.ndarray:
        goal = [g for g in s["goal"] if g[0] in ("on", "in") and len(g) == 3]
        if len(goal) != 1:
            return NOOP_ACTION.copy()
        action = getattr(self, f"_{self.phase}")(s, goal[0][1], goal[0][2])
        self.steps_in_phase += 1
        return np.clip(self._add_noise(action, self.noise), -1.0, 1.0)

    # -- control ------------------------------------------------------------------------------------

    def _move(self, s, target: np.ndarray, rot: np.ndarray, gripper: float, max_step: float | None = None) -> np.ndarray:
        """One step of the hand target toward `target`/`rot`, expressed as base-frame deltas."""
        base = Rotation.from_quat(s["base_quat"]).as_matrix()
        step = target - s["eef_target_pos"]
        limit = self.cfg.max_step if max_step is None else max_step
        norm = np.linalg.norm(step)
        if norm > limit:
            step *= limit / norm
        current = Rotation.from_quat(s["eef_target_quat"]).as_matrix()
        rotvec = Rotation.from_matrix(rot @ current.T).as_rotvec()  # world axes, about the hand
        return np.concatenate([base.T @ step / POS_SCALE, base.T @ rotvec / ROT_SCALE, [gripper]]).astype(np.float32)

    # -- phases -------------------------------------------------------------------------------------

    def _plan(self, s, source: str, target: str) -> np.ndarray:
        obj = s["objects"][source]
        low, high = obj["aabb"]
        tip = max(low[2], high[2] - self.cfg.max_tip_below_top)  # the table stops the fingertips
        yaw = long_axis_yaw(obj)
        current = Rotation.from_matrix(Rotation.from_quat(s["eef_quat"]).as_matrix() @ DOWN.T).as_euler("xyz")[2]
        yaw = min((yaw - np.pi, yaw, yaw + np.pi), key=lambda y: abs(np.angle(np.exp(1j * (y - current)))))
        centre = self._grasp_centre(obj)
        self.plan = {
            "point": np.array([centre[0], centre[1], tip + TIP_BELOW_HAND]),  # balanced in the pinch
            "rot": yaw_down(yaw, DOWN),  # the equivalent grasp yaw nearest to the hand's
            "z0": obj["pos"][2],
            "floor": max(s["objects"][target]["aabb"][1][2], low[2]),  # highest surface under the carry
        }
        self._goto("above")
        return self._above(s, source, target)

    def _above(self, s, source: str, target: str) -> np.ndarray:
        p = self.plan
        waypoint = p["point"] + np.array([0, 0, self.cfg.hover])
        there = self._near(s, waypoint, 0.02) and self._aligned(s, p["rot"], self.cfg.align_tol)
        if there or self.steps_in_phase > 15:
            self._goto("descend")
        return self._move(s, waypoint, p["rot"], OPEN)

    def _descend(self, s, source: str, target: str) -> np.ndarray:
        p = self.plan
        if self._near(s, p["point"], self.cfg.reach_tol) or self.steps_in_phase > 6:
            self._goto("close")
        return self._move(s, p["point"], p["rot"], OPEN, max_step=0.03)

    def _close(self, s, source: str, target: str) -> np.ndarray:
        if self.steps_in_phase >= self.cfg.close_steps:
            self._goto("lift")
        return self._move(s, self.plan["point"], self.plan["rot"], CLOSE)

    def _lift(self, s, source: str, target: str) -> np.ndarray:
        waypoint = np.array([*self.plan["point"][:2], self._carry_height(s, source, target)])
        if self.steps_in_phase >= 2 and self._dropped(s, source):  # the object stayed behind
            return self._regrasp(s, source, target)
        if self._near(s, waypoint, 0.02) or self.steps_in_phase > 8:
            self._goto("carry")
        return self._move(s, waypoint, self.plan["rot"], CLOSE)

    def _regrasp(self, s, source: str, target: str) -> np.ndarray:
        waypoint = self.plan["point"] + np.array([0, 0, self.cfg.hover])
        if self.steps_in_phase >= 2:
            self._goto("plan")
        return self._move(s, waypoint, self.plan["rot"], OPEN)

    def _dropped(self, s, source: str) -> bool:
        """The object is out of the hand and back down: grasp it again while retries last."""
        dropped = not s["grasped"] and s["objects"][source]["pos"][2] < self.plan["z0"] + 0.01
        if dropped and self.retries < self.cfg.max_retries:
            self.retries += 1
            self._goto("regrasp")
            return True
        return False

    def _carry(self, s, source: str, target: str) -> np.ndarray:
        if self._dropped(s, source):
            return self._regrasp(s, source, target)
        obj = s["objects"][source]
        place = self._place_point(s, target)
        waypoint = s["eef_pos"] + np.append(place[:2] - obj["pos"][:2], 0.0)
        waypoint[2] = self._carry_height(s, source, target)
        if np.linalg.norm(place[:2] - obj["pos"][:2]) < 0.008 or self.steps_in_phase > 15:
            self._goto("lower")
        return self._move(s, waypoint, self.plan["rot"], CLOSE, max_step=self.cfg.carry_step)

    def _lower(self, s, source: str, target: str) -> np.ndarray:
        obj = s["objects"][source]
        place = self._place_point(s, target)
        above = obj["aabb"][0][2] - (place[2] + self.cfg.place_gap)
        waypoint = s["eef_pos"] + np.append(place[:2] - obj["pos"][:2], -above)
        if above < 0.005 or self.steps_in_phase > 8:
            self._goto("release")
        return self._move(s, waypoint, self.plan["rot"], CLOSE, max_step=0.025)

    def _release(self, s, source: str, target: str) -> np.ndarray:
        if self.steps_in_phase >= self.cfg.release_steps:
            self._goto("retreat")
        return self._move(s, s["eef_target_pos"], self.plan["rot"], OPEN)

    def _retreat(self, s, source: str, target: str) -> np.ndarray:
        if "retreat" not in self.plan:
            self.plan["retreat"] = s["eef_target_pos"] + np.array([0, 0, 0.06])
        return self._move(s, self.plan["retreat"], self.plan["rot"], OPEN)

    # -- geometry -----------------------------------------------------------------------------------

    def _grasp_centre(self, obj: dict[str, Any]) -> np.ndarray:
        """World point to grasp: on the long axis, the widest cross-section that fits the open gripper (within
        90% of it), nearest the centre of mass. Narrow necks (a spoon's) squeeze out of the fingers."""
        rot = Rotation.from_quat(obj["quat"]).as_matrix()
        points = np.asarray(obj["points"])
        long = int(np.argmax(np.linalg.norm((rot * np.asarray(obj["size"])[None, :])[:2], axis=0)))
        across = int(np.argmax(np.linalg.norm(rot[:2], axis=0) * (np.arange(3) != long)))  # other horizontal axis
        com = rot.T @ (obj["com"] - obj["pos"])
        along = points[:, long]
        edges = np.arange(along.min(), along.max() + 0.01, 0.01)
        sections = []  # (centre along the long axis, width across it)
        for lo, hi in zip(edges[:-1], edges[1:]):
            inside = points[(along >= lo) & (along < hi), across]
            if len(inside) >= 3 and np.ptp(inside) <= self.cfg.max_width:
                sections.append(((lo + hi) / 2, np.ptp(inside)))
        if not sections:
            return obj["com"]
        widest = max(w for _, w in sections)
        at = min((c for c, w in sections if w >= 0.9 * widest), key=lambda c: abs(c - com[long]))
        local = com.copy()
        local[long] = at
        return obj["pos"] + rot @ local

    def _place_point(self, s, target: str) -> np.ndarray:
        """Where the source's centre should end up (x, y) and the surface its bottom comes down to (z)."""
        t = s["objects"][target]
        return np.array([t["pos"][0], t["pos"][1], t["aabb"][1][2]])

    def _carry_height(self, s, source: str, target: str) -> float:
        """Hand height that carries the object's bottom `carry_clearance` above the target's top."""
        hang = s["eef_pos"][2] - s["objects"][source]["aabb"][0][2]  # hand above the object's bottom
        return float(self.plan["floor"] + self.cfg.carry_clearance + max(hang, 0.0))
