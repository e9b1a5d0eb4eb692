"""The Panda script's articulation skills: drawers (slide joints: pinch the handle and pull to open, push the front
with the closed fingers to close) and knobs (vertical hinges, "turnon"/"turnoff": grasp the knob's top and twist
about its axis)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from lamp_bench.models.oracle.base import CLOSE, OPEN
from lamp_bench.models.oracle.panda_hand import DOWN, FINGERTIP_DEPTH, facing, hand_down
from scipy.spatial.transform import Rotation

if TYPE_CHECKING:
    from lamp_bench.models.oracle.panda import Goal


class ArticulationSkills:
    """The `j_*` phases of `PandaScript` (which supplies the state machine, `_move`, `_stalled` and `_next_goal`),
    and the joint look-ups its goal ordering uses."""

    def _joint_of(self, s, name: str, relation: str) -> str | None:
        """The joint a goal on a region or fixture acts on, when the script can work it."""
        joints = s["sites"][name]["joints"] if name in s["sites"] else \
            [j for j, info in s["joints"].items() if info["fixture"] == name]
        for joint in joints:
            info = s["joints"].get(joint)
            if info and relation in info["ranges"] and (info["type"] == "slide") == (relation in ("open", "close")):
                return joint
        return None

    def _in_range(self, s, joint: str, key: str) -> bool:
        info = s["joints"][joint]
        if key not in info["ranges"]:
            return True
        low, high = min(info["ranges"][key]), max(info["ranges"][key])
        return low <= info["qpos"] <= high

    def _j_plan(self, s, goal: Goal) -> np.ndarray:
        joint = self._joint_of(s, goal.obj, goal.relation)
        info = s["joints"][joint]
        want = float(np.mean(info["ranges"][goal.relation]))
        parts = info["parts"]
        g = {"joint": joint, "want": want, "key": goal.relation}
        if info["type"] == "slide":
            # the world direction the moving part travels to reach the wanted position
            travel = info["axis"] * np.sign(want - info["qpos"])
            travel = travel / (np.linalg.norm(travel[:2]) + 1e-9)
            front = -travel if goal.relation == "close" else travel  # the face the hand works on
            reach = parts @ np.append(front[:2], 0.0)  # (n, 2) corner coordinates along `front`
            outer = int(np.argmax(reach.max(axis=1)))
            if goal.relation == "open":  # pinch the handle (the part sticking out most) from the front
                handle = parts[outer].mean(axis=0)
                g.update(kind="pull", rot=facing(-front), point=handle - 0.005 * np.append(front[:2], 0),
                         standoff=handle + 0.12 * np.append(front[:2], 0), travel=travel)
            else:  # push the front face with the closed fingers, hand pointing down
                face = parts.reshape(-1, 3).mean(axis=0)
                face[:2] = face[:2] + front[:2] * (reach.max() - face[:2] @ front[:2])
                face[2] = parts[outer].mean(axis=0)[2]
                point = face + 0.03 * np.append(front[:2], 0)
                point[2] = max(point[2], parts[:, 0, 2].min() + FINGERTIP_DEPTH)
                g.update(kind="push", rot=hand_down(0.0), point=point, standoff=point.copy(), travel=travel)
        else:  # a knob turning about a vertical axis: grasp its top, twist about the axis
            top = parts[int(np.argmax(parts[:, 1, 2]))]
            size = top[1] - top[0]
            yaw = np.pi / 2 if size[0] < size[1] else 0.0  # fingers close across the grip's narrow side
            point = np.array([*top.mean(axis=0)[:2], top[1, 2] - 0.012])
            g.update(kind="twist", rot=hand_down(yaw), point=point, standoff=point.copy(), anchor=info["anchor"],
                     spin=np.sign(info["axis"][2]) * np.sign(want - info["qpos"]))
        self.grasp = g
        self._goto("j_rise")
        return self._j_rise(s, goal)

    def _j_rise(self, s, goal: Goal) -> np.ndarray:
        """Up to a safe height over the stand-off point, turning the hand on the way."""
        g = self.grasp
        target = np.array([*g["standoff"][:2], max(g["standoff"][2], g["point"][2]) + 0.12])
        if (self._near(s, target, 0.02) and self._aligned(s, g["rot"], 0.15)) or self.steps_in_phase > 80:
            self._goto("j_approach")
        gripper = CLOSE if g["kind"] == "push" else OPEN
        return self._move(s, target, g["rot"], gripper)

    def _j_approach(self, s, goal: Goal) -> np.ndarray:
        """Down to the stand-off point, then in to the handle / knob / face."""
        g = self.grasp
        gripper = CLOSE if g["kind"] == "push" else OPEN
        if not g.get("down"):
            g["down"] = self._near(s, g["standoff"], 0.012) or self.steps_in_phase > 50
            return self._move(s, g["standoff"], g["rot"], gripper, speed=0.6)
        if self._near(s, g["point"], 0.008) or self._stalled() or self.steps_in_phase > 60:
            self._goto("j_grip" if g["kind"] != "push" else "j_drive")
        return self._move(s, g["point"], g["rot"], gripper, speed=0.5)

    def _j_grip(self, s, goal: Goal) -> np.ndarray:
        if self.steps_in_phase >= self.cfg.grasp_steps:
            self.grasp["start"] = s["eef_pos"].copy()
            self._goto("j_drive")
        return self._move(s, self.grasp["point"], self.grasp["rot"], CLOSE)

    def _j_drive(self, s, goal: Goal) -> np.ndarray:
        g = self.grasp
        info = s["joints"][g["joint"]]
        if self._in_range(s, g["joint"], g["key"]) or self.steps_in_phase > 100:
            self._goto("j_release")
        if g["kind"] == "twist":
            angle = min(0.12 * (self.steps_in_phase + 1), 2.0) * g["spin"]
            turn = Rotation.from_euler("z", angle).as_matrix()
            target = g["anchor"] + turn @ (g["point"] - g["anchor"])
            target[2] = g["point"][2]
            return self._move(s, target, turn @ g["rot"], CLOSE)
        remaining = abs(g["want"] - info["qpos"]) + 0.02
        return self._move(s, s["eef_pos"] + g["travel"] * remaining, g["rot"], CLOSE, speed=0.6)

    def _j_release(self, s, goal: Goal) -> np.ndarray:
        if self.steps_in_phase >= self.cfg.release_steps:
            self._goto("j_retreat")
        return np.array([0, 0, 0, 0, 0, 0, OPEN], dtype=np.float32)

    def _j_retreat(self, s, goal: Goal) -> np.ndarray:
        g = self.grasp
        if "away" not in g:  # out of the way: back from the drawer front, and up
            back = {"pull": 1.0, "push": -1.0}.get(g["kind"], 0.0) * g.get("travel", np.zeros(3))
            g["away"] = s["eef_pos"] + 0.08 * np.append(back[:2], 0) + np.array([0, 0, 0.06])
        rot = DOWN if g["kind"] == "pull" and self.steps_in_phase > 5 else g["rot"]  # turn back once clear
        if self._near(s, g["away"], 0.02) or self.steps_in_phase > 25:
            self._next_goal()
        return self._move(s, g["away"], rot, OPEN)
