"""The oracle's Panda script (LIBERO): the BDDL goal becomes a sequence of skills -- open what must be open to put
something in it, then pick-and-place and switches, then close.
  * pick-and-place ("on"/"in", object, target): grasp top-down (pinch the rim of objects wider than the
    gripper opens, such as bowls, on the side with the most room -- across the drawer for a bowl in a
    drawer; close across the narrow side otherwise), slide out from under an opened drawer, lift, carry
    so that the *object* (tracked live, not the hand) is over the target, lower it until it nearly
    touches, release. A grasp that loses the object is retried.
  * drawers (slide joints): "open" pinches the handle with the hand turned horizontal and pulls; "close"
    pushes the front with the closed fingers.
  * knobs (vertical hinges, "turnon"/"turnoff"): grasp the knob's top and twist about its axis.
Goals it cannot do (hinged doors, plates to push) leave the arm holding still, so the episode fails on
the suite's step limit. Deterministic given the episode seed (the seed only drives the optional action
noise used to diversify demonstrations).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from lamp_bench.models.oracle.base import CLOSE, NOOP_ACTION, OPEN, OracleConfig, PhaseScript, register_script
from lamp_bench.models.oracle.panda_articulation import ArticulationSkills
from lamp_bench.models.oracle.panda_hand import FINGERTIP_DEPTH, GRIPPER_SPAN, hand_down
from scipy.spatial.transform import Rotation

PICK_PLACE, JOINT = ("on", "in"), ("open", "close", "turnon", "turnoff")


@dataclass
class Goal:
    relation: str  # "on" | "in" (pick obj, place at target) | "open" | "close" | "turnon" | "turnoff"
    obj: str  # the object to move, or the region/fixture to articulate
    target: str = ""


@register_script("panda")
class PandaScript(ArticulationSkills, PhaseScript):
    def __init__(self, config: OracleConfig, seed: int):
        super().__init__(seed)
        self.cfg = config
        self.goals: list[Goal] | None = None
        self.trail: list[np.ndarray] = []  # hand positions during the current phase
        self.grasp: dict[str, Any] = {}

    # -- top level ----------------------------------------------------------------------------------

    def act(self, s: dict[str, Any]) -> np.ndarray:
        if self.goals is None:
            self.goals = self._order_goals(s)
        if not self.goals:
            return NOOP_ACTION.copy()
        goal = self.goals[0]
        phase = self.phase if goal.relation in PICK_PLACE or self.phase.startswith("j_") else "j_plan"
        self.phase = phase
        self.trail.append(s["eef_pos"].copy())
        action = getattr(self, f"_{phase}")(s, goal)
        if self.phase == phase:  # a phase sees steps_in_phase == 0 on its first step
            self.steps_in_phase += 1
        return self._add_noise(action, self.cfg.action_noise)

    def _order_goals(self, s) -> list[Goal]:
        """The BDDL goal as a sequence of skills: open what must be open to put something in it, then
        pick-and-place and switches, then close. An unknown predicate or joint leaves the list empty
        (the arm holds still and the episode fails on its step limit)."""
        opens, middle, closes = [], [], []
        for g in s["goal"]:
            if g[0] in PICK_PLACE and len(g) == 3:
                for joint in s["sites"].get(g[2], {}).get("joints", []):
                    if not self._in_range(s, joint, "open") and Goal("open", g[2]) not in opens:
                        opens.append(Goal("open", g[2]))
                middle.append(Goal(g[0], g[1], g[2]))
            elif g[0] in JOINT and len(g) == 2 and self._joint_of(s, g[1], g[0]):
                (closes if g[0] == "close" else opens if g[0] == "open" else middle).append(Goal(g[0], g[1]))
            else:
                return []
        return opens + middle + closes

    def _next_goal(self) -> None:
        self.goals.pop(0)
        self.retries = 0
        self.grasp = {}
        self._goto("plan")

    def _goto(self, phase: str) -> None:
        super()._goto(phase)
        self.trail = []  # `_stalled` judges the current phase only

    def _stalled(self, steps: int = 6, moved: float = 0.002) -> bool:
        """The hand moved less than `moved` over the last `steps` steps of this phase (it is blocked)."""
        return len(self.trail) > steps and bool(np.linalg.norm(self.trail[-1] - self.trail[-1 - steps]) < moved)

    def _move(self, s, target: np.ndarray, rot: np.ndarray, gripper: float, speed: float | None = None) -> np.ndarray:
        speed = self.cfg.max_speed if speed is None else speed
        pos = (target - s["eef_pos"]) * self.cfg.gain
        norm = np.linalg.norm(pos)
        if 0.01 < norm < self.cfg.min_speed:  # P-control alone crawls over the last centimetre
            pos *= self.cfg.min_speed / norm
        pos = np.clip(pos, -speed, speed)
        current = Rotation.from_quat(s["eef_quat"]).as_matrix()
        err = Rotation.from_matrix(rot @ current.T).as_rotvec()
        return np.concatenate([pos, np.clip(err * self.cfg.rot_gain, -1, 1), [gripper]]).astype(np.float32)

    # -- pick and place -----------------------------------------------------------------------------

    def _plan(self, s, pick: Goal) -> np.ndarray:
        obj = s["objects"][pick.obj]
        low, high = obj["aabb"]
        centre, size = (low + high) / 2, high - low
        across, narrow = self._narrow_axis(obj)
        if narrow > GRIPPER_SPAN:  # too wide to close around (a bowl): pinch the rim
            z = high[2] - 0.02
            radius = min(size[0], size[1]) / 2 - 0.015
            d = self._rim_direction(s, pick.obj, centre, radius, z)
            point = centre[:2] + d * radius
            yaw = np.arctan2(d[1], d[0]) - np.pi / 2  # fingers close along d (radially)
        else:  # close across the object's narrow horizontal side, fingertips clear of the support
            z = max(high[2] - 0.035, low[2] + 0.5 * size[2], low[2] + FINGERTIP_DEPTH)
            point = obj["obb_center"][:2]
            yaw = np.arctan2(across[1], across[0]) - np.pi / 2
        yaw = _nearest_equivalent(yaw, Rotation.from_quat(s["eef_quat"]).as_euler("xyz")[2])
        self.grasp = {"point": np.array([point[0], point[1], z]), "rot": hand_down(yaw), "z0": obj["pos"][2]}
        self._goto("above")
        return self._above(s, pick)

    def _rim_direction(self, s, name: str, centre: np.ndarray, radius: float, z: float) -> np.ndarray:
        """Unit vector from the object's centre to the rim point to pinch: the one whose fingers and hand
        keep the most room from other objects (objects inside a fixture, such as a bowl in a drawer, are
        pinched on a side wall, across the drawer), mildly preferring the robot's side."""
        enclosing = self._enclosing_fixture(s, name)
        angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        if enclosing is not None:  # across the drawer: perpendicular to the direction it slides out
            out = s["objects"][name]["pos"][:2] - s["objects"][enclosing]["pos"][:2]
            base = np.arctan2(out[1], out[0]) + np.pi / 2
            angles = np.array([base, base + np.pi])
        toward_robot = np.array([-1.0, 0.0])
        obstacles = [box for n, o in s["objects"].items() if n not in (name, enclosing)
                     for box in o["parts"] if box[1][2] > z - 0.04]
        best, best_score = None, -np.inf
        for a in angles:
            d = np.array([np.cos(a), np.sin(a)])
            side = np.array([-d[1], d[0]])
            grasp = centre[:2] + d * radius
            # fingers open to +-4 cm along d; the hand is ~2 cm thick across
            footprint = [grasp + d * u + side * v for u in (-0.05, 0.0, 0.05) for v in (-0.02, 0.0, 0.02)]
            room = min([_distance_to_box(p, box) for p in footprint for box in obstacles] + [0.04])
            score = min(room, 0.04) + 0.01 * float(d @ toward_robot)
            if score > best_score:
                best, best_score = d, score
        return best

    def _narrow_axis(self, obj) -> tuple[np.ndarray, float]:
        """The object's narrower horizontal axis (a unit 2-vector) and its full width along it."""
        axes = Rotation.from_quat(obj["quat"]).as_matrix()
        horizontal = np.linalg.norm(axes[:2], axis=0)  # how horizontal each object axis lies
        candidates = np.argsort(-horizontal)[:2]
        k = min(candidates, key=lambda i: obj["obb_half"][i])
        return axes[:2, k] / horizontal[k], 2 * float(obj["obb_half"][k])

    def _enclosing_fixture(self, s, name: str) -> str | None:
        """The fixture (a cabinet with an open drawer) whose box holds the object below its top."""
        obj = s["objects"][name]
        for other, o in s["objects"].items():
            low, high = o["aabb"]
            if other != name and o["kind"] == "fixture" and np.all(obj["pos"][:2] > low[:2]) \
                    and np.all(obj["pos"][:2] < high[:2]) and low[2] < obj["pos"][2] < high[2] \
                    and obj["aabb"][1][2] < high[2] + 0.005:
                return other
        return None

    def _above(self, s, pick: Goal) -> np.ndarray:
        g = self.grasp
        target = g["point"] + np.array([0, 0, self.cfg.hover])
        if self._near(s, target, 0.015) or self._stalled() or self.steps_in_phase > 60:  # stalled: under a drawer
            self._goto("descend")
        return self._move(s, target, g["rot"], OPEN)

    def _descend(self, s, pick: Goal) -> np.ndarray:
        g = self.grasp
        if self._near(s, g["point"], 0.006) or self.steps_in_phase > 40:
            self._goto("close")
        return self._move(s, g["point"], g["rot"], OPEN, speed=0.6)

    def _close(self, s, pick: Goal) -> np.ndarray:
        if self.steps_in_phase >= self.cfg.grasp_steps:
            self._goto("lift")
        return self._move(s, self.grasp["point"], self.grasp["rot"], CLOSE)

    def _lift(self, s, pick: Goal) -> np.ndarray:
        obj = s["objects"][pick.obj]
        if self.steps_in_phase == 0:
            self.grasp["hang"] = s["eef_pos"][2] - obj["aabb"][0][2]  # hand above the object's bottom
            self.grasp["escape"] = s["eef_pos"] + self._escape(s, pick)
        if self.grasp.get("escape") is not None:  # first slide out from under an open drawer
            target = self.grasp["escape"]
            if self._near(s, target, 0.015) or self._stalled() or self.steps_in_phase > 30:
                self.grasp["escape"] = None
            return self._move(s, target, self.grasp["rot"], CLOSE, speed=0.5)
        target = np.array([*s["eef_pos"][:2], self._carry_height(s, pick)])
        if self.steps_in_phase > 8 and self._dropped(s, pick):
            return self._retry(s)
        if self._near(s, target, 0.02) or self.steps_in_phase > 60:
            self._goto("carry")
        return self._move(s, target, self.grasp["rot"], CLOSE)

    def _escape(self, s, pick: Goal) -> np.ndarray:
        """The shortest horizontal move (plus 2 cm up) that takes the object out from under the moving
        parts of fixtures (an opened drawer above it); zero when nothing is above it."""
        low, high = s["objects"][pick.obj]["aabb"]
        above = [box for info in s["joints"].values() for box in info["parts"]
                 if box[0][2] > high[2] - 0.01 and np.all(box[0][:2] < high[:2] + 0.01)
                 and np.all(box[1][:2] > low[:2] - 0.01)]
        if not above:
            return np.zeros(3)
        cover = np.array([np.min([b[0] for b in above], axis=0), np.max([b[1] for b in above], axis=0)])
        moves = [np.array([cover[0][0] - high[0] - 0.02, 0.0]), np.array([cover[1][0] - low[0] + 0.02, 0.0]),
                 np.array([0.0, cover[0][1] - high[1] - 0.02]), np.array([0.0, cover[1][1] - low[1] + 0.02])]
        move = min(moves, key=np.linalg.norm)
        return np.array([move[0], move[1], 0.02])

    def _dropped(self, s, pick: Goal) -> bool:
        """The object no longer hangs from the hand (left behind or slipped out); a rim-held bowl may tilt
        and sink a little below where it hung at the start, hence the margin."""
        return bool(s["objects"][pick.obj]["aabb"][0][2] < s["eef_pos"][2] - self.grasp["hang"] - 0.05)

    def _retry(self, s) -> np.ndarray:
        """Open, go back up and grasp again (a bounded number of times; then carry on regardless)."""
        if self.retries < self.cfg.max_retries:
            self.retries += 1
            self._goto("regrasp")
        return self._move(s, s["eef_pos"], self.grasp["rot"], OPEN)

    def _regrasp(self, s, pick: Goal) -> np.ndarray:
        target = s["eef_pos"] + np.array([0, 0, 0.05])
        if self.steps_in_phase > 10:
            self._goto("plan")
        return self._move(s, target, self.grasp["rot"], OPEN)

    def _carry(self, s, pick: Goal) -> np.ndarray:
        obj = s["objects"][pick.obj]
        place = self._place_point(s, pick)
        target = s["eef_pos"].copy()
        target[:2] += place[:2] - obj["pos"][:2]
        target[2] = self._carry_height(s, pick)
        if self._dropped(s, pick):
            return self._retry(s)
        if np.linalg.norm(place[:2] - obj["pos"][:2]) < 0.008 or self.steps_in_phase > 80:
            self._goto("lower")
        return self._move(s, target, self.grasp["rot"], CLOSE)

    def _lower(self, s, pick: Goal) -> np.ndarray:
        obj = s["objects"][pick.obj]
        place = self._place_point(s, pick)
        bottom = obj["aabb"][0][2]
        target = s["eef_pos"].copy()
        target[:2] += place[:2] - obj["pos"][:2]
        target[2] -= bottom - (place[2] + self.cfg.place_gap)
        if bottom - (place[2] + self.cfg.place_gap) < 0.004 or self.steps_in_phase > 50:
            self._goto("release")
        return self._move(s, target, self.grasp["rot"], CLOSE, speed=1.0 if target[2] < s["eef_pos"][2] - 0.04 else 0.5)

    def _release(self, s, pick: Goal) -> np.ndarray:
        if self.steps_in_phase >= self.cfg.release_steps:
            self._goto("retreat")
        return np.array([0, 0, 0, 0, 0, 0, OPEN], dtype=np.float32)

    def _retreat(self, s, pick: Goal) -> np.ndarray:
        if self.steps_in_phase == 0:
            self.grasp["retreat"] = s["eef_pos"] + np.array([0, 0, 0.10])
        target, rot = self.grasp["retreat"], self.grasp["rot"]
        if self._near(s, target, 0.02) or self.steps_in_phase > 30:
            self._next_goal()
        return self._move(s, target, rot, OPEN)

    # -- geometry -----------------------------------------------------------------------------------

    def _carry_height(self, s, pick: Goal) -> float:
        """Hand height that carries the object's bottom `carry_clearance` above everything on the way."""
        obj = s["objects"][pick.obj]
        if "floor" not in self.grasp:
            start, place = obj["pos"][:2], self._place_point(s, pick)
            reach = np.linalg.norm(obj["aabb"][1][:2] - obj["aabb"][0][:2]) / 2 + 0.03
            tops = [place[2], obj["aabb"][0][2]]
            for name, other in s["objects"].items():
                if name != pick.obj and _box_near_segment(other["aabb"], start, place[:2], reach):
                    tops.append(other["aabb"][1][2])
            self.grasp["floor"] = max(tops)
        return self.grasp["floor"] + self.cfg.carry_clearance + self.grasp["hang"]

    def _place_point(self, s, pick: Goal) -> np.ndarray:
        """Where the object's centre should end up (x, y) and the surface its bottom rests on (z)."""
        if pick.target in s["objects"]:
            t = s["objects"][pick.target]
            low, high = t["aabb"]
            return np.array([t["pos"][0], t["pos"][1], high[2] if pick.relation == "on" else low[2]])
        site = s["sites"][pick.target]
        top = site["pos"][2] + abs(site["size"][2])
        point = np.array([site["pos"][0], site["pos"][1], top if pick.relation == "on" else site["pos"][2]])
        for joint in site["joints"]:  # a drawer's region: aim at its part that slid out, clear of the cabinet
            info = s["joints"][joint]
            if info["type"] == "slide" and {"open", "close"} <= set(info["ranges"]):
                out = info["axis"] * np.sign(np.mean(info["ranges"]["open"]) - np.mean(info["ranges"]["close"]))
                extent = np.abs(site["mat"] @ site["size"])  # LIBERO's containment box half sizes
                point[:2] += out[:2] * max(float(np.abs(out) @ extent) - 0.015, 0.0)
        return point


def _nearest_equivalent(yaw: float, current: float) -> float:
    """The grasp yaw (fingers are symmetric: yaw and yaw+pi are the same grasp) closest to `current`."""
    best = min((yaw + k * np.pi for k in range(-3, 4)), key=lambda y: abs(np.angle(np.exp(1j * (y - current)))))
    return float(np.angle(np.exp(1j * best)))


def _box_near_segment(box: np.ndarray, a: np.ndarray, b: np.ndarray, reach: float) -> bool:
    """Whether a world box's horizontal extent comes within `reach` of the segment a-b."""
    t = np.linspace(0.0, 1.0, 20)[:, None]
    points = a + t * (b - a)
    nearest = np.clip(points, box[0][:2], box[1][:2])
    return bool(np.min(np.linalg.norm(points - nearest, axis=1)) < reach)


def _distance_to_box(point: np.ndarray, box: np.ndarray) -> float:
    """Horizontal distance from a point to a world box (0 inside)."""
    return float(np.linalg.norm(point - np.clip(point, box[0][:2], box[1][:2])))
