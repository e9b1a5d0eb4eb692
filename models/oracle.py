"""The privileged scripted policy (`oracle`) and the do-nothing baseline (`noop`).

The oracle reads simulator state from `Observation.privileged` (what a suite delivers when
`PolicyNeeds.privileged` is set; see suites/libero.py for the keys) and runs one state machine per batch
slot, dispatched on `privileged["robot"]`. A script for another robot registers itself with
`@register_script("<robot>")` in `lamp_bench.models.oracle_<robot>`, which is imported on first use.

Panda (LIBERO) script: the BDDL goal becomes a sequence of skills -- open what must be open to put
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

import importlib
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from lamp_bench.harness.policy import Observation, Policy, PolicyNeeds, Task, slot_indices
from lamp_bench.harness.registry import register_policy

NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float32)
OPEN, CLOSE = -1.0, 1.0

_SCRIPTS: dict[str, Callable[..., "Script"]] = {}


def register_script(robot: str) -> Callable:
    def decorator(factory: Callable[..., "Script"]) -> Callable[..., "Script"]:
        _SCRIPTS[robot] = factory
        return factory

    return decorator


def script_for(robot: str) -> Callable[..., "Script"]:
    if robot not in _SCRIPTS:
        try:
            importlib.import_module(f"lamp_bench.models.oracle_{robot}")
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


# ---------------------------------------------------------------------------------------------- Panda

DOWN = np.diag([1.0, -1.0, -1.0])  # Panda hand pointing down, fingers closing along world y
GRIPPER_SPAN = 0.075  # widest object the Panda hand closes around (it opens 8 cm)
FINGERTIP_DEPTH = 0.018  # the grip site sits this far above the fingertips
PICK_PLACE, JOINT = ("on", "in"), ("open", "close", "turnon", "turnoff")


def _yaw_down(yaw: float) -> np.ndarray:
    return Rotation.from_euler("z", yaw).as_matrix() @ DOWN


def _facing(direction: np.ndarray) -> np.ndarray:
    """Hand pointing horizontally along `direction` (its approach axis), fingers closing vertically."""
    z = np.array([direction[0], direction[1], 0.0]) / np.linalg.norm(direction[:2])
    y = np.array([0.0, 0.0, 1.0])
    return np.stack([np.cross(y, z), y, z], axis=1)


@dataclass
class _Goal:
    relation: str  # "on" | "in" (pick obj, place at target) | "open" | "close" | "turnon" | "turnoff"
    obj: str  # the object to move, or the region/fixture to articulate
    target: str = ""


@register_script("panda")
class PandaScript(Script):
    def __init__(self, config: OracleConfig, seed: int):
        self.cfg = config
        self.rng = np.random.default_rng(seed)
        self.goals: list[_Goal] | None = None
        self.phase = "plan"
        self.steps_in_phase = 0
        self.trail: list[np.ndarray] = []  # hand positions during the current phase
        self.retries = 0
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
        if self.cfg.action_noise > 0:
            action[:6] += self.rng.normal(0, self.cfg.action_noise, 6)
        return action

    def _order_goals(self, s) -> list[_Goal]:
        """The BDDL goal as a sequence of skills: open what must be open to put something in it, then
        pick-and-place and switches, then close. An unknown predicate or joint leaves the list empty
        (the arm holds still and the episode fails on its step limit)."""
        opens, middle, closes = [], [], []
        for g in s["goal"]:
            if g[0] in PICK_PLACE and len(g) == 3:
                for joint in s["sites"].get(g[2], {}).get("joints", []):
                    if not self._in_range(s, joint, "open") and _Goal("open", g[2]) not in opens:
                        opens.append(_Goal("open", g[2]))
                middle.append(_Goal(g[0], g[1], g[2]))
            elif g[0] in JOINT and len(g) == 2 and self._joint_of(s, g[1], g[0]):
                (closes if g[0] == "close" else opens if g[0] == "open" else middle).append(_Goal(g[0], g[1]))
            else:
                return []
        return opens + middle + closes

    def _next_goal(self) -> None:
        self.goals.pop(0)
        self.retries = 0
        self.grasp = {}
        self._goto("plan")

    def _goto(self, phase: str) -> None:
        self.phase, self.steps_in_phase, self.trail = phase, 0, []

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

    def _near(self, s, target: np.ndarray, tol: float) -> bool:
        return bool(np.linalg.norm(target - s["eef_pos"]) < tol)

    def _aligned(self, s, rot: np.ndarray, tol: float = 0.15) -> bool:
        current = Rotation.from_quat(s["eef_quat"]).as_matrix()
        return bool(np.linalg.norm(Rotation.from_matrix(rot @ current.T).as_rotvec()) < tol)

    # -- pick and place -----------------------------------------------------------------------------

    def _plan(self, s, pick: _Goal) -> np.ndarray:
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
        self.grasp = {"point": np.array([point[0], point[1], z]), "rot": _yaw_down(yaw), "z0": obj["pos"][2]}
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

    def _above(self, s, pick: _Goal) -> np.ndarray:
        g = self.grasp
        target = g["point"] + np.array([0, 0, self.cfg.hover])
        if self._near(s, target, 0.015) or self._stalled() or self.steps_in_phase > 60:  # stalled: under a drawer
            self._goto("descend")
        return self._move(s, target, g["rot"], OPEN)

    def _descend(self, s, pick: _Goal) -> np.ndarray:
        g = self.grasp
        if self._near(s, g["point"], 0.006) or self.steps_in_phase > 40:
            self._goto("close")
        return self._move(s, g["point"], g["rot"], OPEN, speed=0.6)

    def _close(self, s, pick: _Goal) -> np.ndarray:
        if self.steps_in_phase >= self.cfg.grasp_steps:
            self._goto("lift")
        return self._move(s, self.grasp["point"], self.grasp["rot"], CLOSE)

    def _lift(self, s, pick: _Goal) -> np.ndarray:
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

    def _escape(self, s, pick: _Goal) -> np.ndarray:
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

    def _dropped(self, s, pick: _Goal) -> bool:
        """The object no longer hangs from the hand (left behind or slipped out); a rim-held bowl may tilt
        and sink a little below where it hung at the start, hence the margin."""
        return bool(s["objects"][pick.obj]["aabb"][0][2] < s["eef_pos"][2] - self.grasp["hang"] - 0.05)

    def _retry(self, s) -> np.ndarray:
        """Open, go back up and grasp again (a bounded number of times; then carry on regardless)."""
        if self.retries < self.cfg.max_retries:
            self.retries += 1
            self._goto("regrasp")
        return self._move(s, s["eef_pos"], self.grasp["rot"], OPEN)

    def _regrasp(self, s, pick: _Goal) -> np.ndarray:
        target = s["eef_pos"] + np.array([0, 0, 0.05])
        if self.steps_in_phase > 10:
            self._goto("plan")
        return self._move(s, target, self.grasp["rot"], OPEN)

    def _carry(self, s, pick: _Goal) -> np.ndarray:
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

    def _lower(self, s, pick: _Goal) -> np.ndarray:
        obj = s["objects"][pick.obj]
        place = self._place_point(s, pick)
        bottom = obj["aabb"][0][2]
        target = s["eef_pos"].copy()
        target[:2] += place[:2] - obj["pos"][:2]
        target[2] -= bottom - (place[2] + self.cfg.place_gap)
        if bottom - (place[2] + self.cfg.place_gap) < 0.004 or self.steps_in_phase > 50:
            self._goto("release")
        return self._move(s, target, self.grasp["rot"], CLOSE, speed=1.0 if target[2] < s["eef_pos"][2] - 0.04 else 0.5)

    def _release(self, s, pick: _Goal) -> np.ndarray:
        if self.steps_in_phase >= self.cfg.release_steps:
            self._goto("retreat")
        return np.array([0, 0, 0, 0, 0, 0, OPEN], dtype=np.float32)

    def _retreat(self, s, pick: _Goal) -> np.ndarray:
        if self.steps_in_phase == 0:
            self.grasp["retreat"] = s["eef_pos"] + np.array([0, 0, 0.10])
        target, rot = self.grasp["retreat"], self.grasp["rot"]
        if self._near(s, target, 0.02) or self.steps_in_phase > 30:
            self._next_goal()
        return self._move(s, target, rot, OPEN)

    # -- articulation: drawers (slide joints: pull the handle / push the front) and knobs (hinges: twist)

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

    def _j_plan(self, s, goal: _Goal) -> np.ndarray:
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
                g.update(kind="pull", rot=_facing(-front), point=handle - 0.005 * np.append(front[:2], 0),
                         standoff=handle + 0.12 * np.append(front[:2], 0), travel=travel)
            else:  # push the front face with the closed fingers, hand pointing down
                face = parts.reshape(-1, 3).mean(axis=0)
                face[:2] = face[:2] + front[:2] * (reach.max() - face[:2] @ front[:2])
                face[2] = parts[outer].mean(axis=0)[2]
                point = face + 0.03 * np.append(front[:2], 0)
                point[2] = max(point[2], parts[:, 0, 2].min() + FINGERTIP_DEPTH)
                g.update(kind="push", rot=_yaw_down(0.0), point=point, standoff=point.copy(), travel=travel)
        else:  # a knob turning about a vertical axis: grasp its top, twist about the axis
            top = parts[int(np.argmax(parts[:, 1, 2]))]
            size = top[1] - top[0]
            yaw = np.pi / 2 if size[0] < size[1] else 0.0  # fingers close across the grip's narrow side
            point = np.array([*top.mean(axis=0)[:2], top[1, 2] - 0.012])
            g.update(kind="twist", rot=_yaw_down(yaw), point=point, standoff=point.copy(), anchor=info["anchor"],
                     spin=np.sign(info["axis"][2]) * np.sign(want - info["qpos"]))
        self.grasp = g
        self._goto("j_rise")
        return self._j_rise(s, goal)

    def _j_rise(self, s, goal: _Goal) -> np.ndarray:
        """Up to a safe height over the stand-off point, turning the hand on the way."""
        g = self.grasp
        target = np.array([*g["standoff"][:2], max(g["standoff"][2], g["point"][2]) + 0.12])
        if (self._near(s, target, 0.02) and self._aligned(s, g["rot"])) or self.steps_in_phase > 80:
            self._goto("j_approach")
        gripper = CLOSE if g["kind"] == "push" else OPEN
        return self._move(s, target, g["rot"], gripper)

    def _j_approach(self, s, goal: _Goal) -> np.ndarray:
        """Down to the stand-off point, then in to the handle / knob / face."""
        g = self.grasp
        gripper = CLOSE if g["kind"] == "push" else OPEN
        if not g.get("down"):
            g["down"] = self._near(s, g["standoff"], 0.012) or self.steps_in_phase > 50
            return self._move(s, g["standoff"], g["rot"], gripper, speed=0.6)
        if self._near(s, g["point"], 0.008) or self._stalled() or self.steps_in_phase > 60:
            self._goto("j_grip" if g["kind"] != "push" else "j_drive")
        return self._move(s, g["point"], g["rot"], gripper, speed=0.5)

    def _j_grip(self, s, goal: _Goal) -> np.ndarray:
        if self.steps_in_phase >= self.cfg.grasp_steps:
            self.grasp["start"] = s["eef_pos"].copy()
            self._goto("j_drive")
        return self._move(s, self.grasp["point"], self.grasp["rot"], CLOSE)

    def _j_drive(self, s, goal: _Goal) -> np.ndarray:
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

    def _j_release(self, s, goal: _Goal) -> np.ndarray:
        if self.steps_in_phase >= self.cfg.release_steps:
            self._goto("j_retreat")
        return np.array([0, 0, 0, 0, 0, 0, OPEN], dtype=np.float32)

    def _j_retreat(self, s, goal: _Goal) -> np.ndarray:
        g = self.grasp
        if "away" not in g:  # out of the way: back from the drawer front, and up
            back = {"pull": 1.0, "push": -1.0}.get(g["kind"], 0.0) * g.get("travel", np.zeros(3))
            g["away"] = s["eef_pos"] + 0.08 * np.append(back[:2], 0) + np.array([0, 0, 0.06])
        rot = DOWN if g["kind"] == "pull" and self.steps_in_phase > 5 else g["rot"]  # turn back once clear
        if self._near(s, g["away"], 0.02) or self.steps_in_phase > 25:
            self._next_goal()
        return self._move(s, g["away"], rot, OPEN)

    # -- geometry -----------------------------------------------------------------------------------

    def _carry_height(self, s, pick: _Goal) -> float:
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

    def _place_point(self, s, pick: _Goal) -> np.ndarray:
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
