"""Objects Layout in the lamp-bench backend: objects of interest displaced over the support surface, and
distractors from LIBERO's own objects declared in a derived BDDL, then placed on free spots after every reset."""
from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from lamp_bench.suites.libero_plus.scene_edits import first_hit

# LIBERO objects (in the asset pack) used as distractors: small, stable, unambiguous.
DISTRACTOR_BANK = ("alphabet_soup", "bbq_sauce", "butter", "chocolate_pudding", "cream_cheese", "ketchup", "milk",
                   "orange_juice", "porcelain_mug", "red_coffee_mug", "salad_dressing", "tomato_sauce",
                   "white_yellow_mug")


def distractor_names(kinds: Sequence[str]) -> list[str]:
    """Object names of the distractors in the BDDL (numbered past any LIBERO scene's own)."""
    return [f"{kind}_{90 + i}" for i, kind in enumerate(kinds)]


def choose_distractors(bddl_text: str, count: int, variant: int) -> tuple[str, ...]:
    """`count` distractor categories from DISTRACTOR_BANK, none already in the scene, seeded by `variant`."""
    present = set(re.findall(r"-\s*(\w+)", bddl_text))
    bank = [kind for kind in DISTRACTOR_BANK if kind not in present]
    picks = np.random.default_rng(variant).permutation(len(bank))[:count]
    return tuple(bank[i] for i in sorted(picks))


def write_distractor_bddl(base: Path, kinds: Sequence[str], folder: Path) -> Path:
    """The base task's BDDL with the distractors declared on the support surface (placed properly by
    `Layout.place_distractors` after every reset; the region only has to be sampleable by LIBERO)."""
    text = base.read_text()
    targets = re.findall(r"\(:target\s+(\w+)\)", text)
    surface = max(("floor", *[t for t in targets if t.endswith("table")]), key=targets.count)
    names = distractor_names(kinds)
    region = (f"      (lamp_bench_distractor_region\n          (:target {surface})\n"
              f"          (:ranges (\n              (-0.3 -0.3 0.3 0.3)\n            )\n          )\n      )\n")
    text = re.sub(r"\(:regions\n", lambda m: m.group(0) + region, text, count=1)
    # appended last, so LIBERO samples the task's own placements (fixtures included) as for the base task
    text = re.sub(r"(\(:objects\n(?:[^()]*\n)*?)(\s*\))", lambda m: m.group(1) + "".join(
        f"    {n} - {k}\n" for n, k in zip(names, kinds)) + m.group(2), text, count=1)
    text = re.sub(r"(\(:init\n(?:\s*\(.*\)\n)*?)(\s*\))", lambda m: m.group(1) + "".join(
        f"    (On {n} {surface}_lamp_bench_distractor_region)\n" for n in names) + m.group(2), text, count=1)
    if text.count("lamp_bench_distractor_region") != 1 + len(names):
        raise ValueError(f"could not add distractors to {base}: unexpected BDDL layout")
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    path = folder / f"{base.stem}_lamp_bench_{'_'.join(kinds)}_{digest}.bddl"
    if not path.is_file():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)  # atomic: parallel workers may write the same file
    return path


def restore_state_with_extras(env, base_state: np.ndarray, extras: Sequence[str]) -> None:
    """Set a flattened base-task state (time, qpos, qvel) on a model that also holds the free-jointed bodies
    `extras`: their joints take no part in the base layout, which is matched joint by joint."""
    import mujoco

    model = env.sim.model._model
    data = env.sim.data._data
    extra_joints = {j for n in extras for j in env.get_object(n).joints}
    qpos, qvel = base_state[1: 1 + model.nq - 7 * len(extras)], base_state[1 + model.nq - 7 * len(extras):]
    qi = vi = 0
    parked: list[int] = []
    for j in range(model.njnt):
        nq = {mujoco.mjtJoint.mjJNT_FREE: 7, mujoco.mjtJoint.mjJNT_BALL: 4}.get(model.jnt_type[j], 1)
        nv = {mujoco.mjtJoint.mjJNT_FREE: 6, mujoco.mjtJoint.mjJNT_BALL: 3}.get(model.jnt_type[j], 1)
        qa, va = model.jnt_qposadr[j], model.jnt_dofadr[j]
        if mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j) in extra_joints:  # parked upright, far away
            data.qpos[qa: qa + nq] = [5.0 + 0.5 * len(parked), 5.0, 3.0, 1.0, 0.0, 0.0, 0.0]
            data.qvel[va: va + nv] = 0.0
            parked.append(j)
            continue
        data.qpos[qa: qa + nq] = qpos[qi: qi + nq]
        data.qvel[va: va + nv] = qvel[vi: vi + nv]
        qi, vi = qi + nq, vi + nv
    if qi != len(qpos) or vi != len(qvel):
        raise ValueError("the base init state does not match the task's model with distractors")
    data.time = base_state[0]
    mujoco.mj_forward(model, data)


def _overlap(a: np.ndarray, b: np.ndarray, margin: float) -> float:
    """Area shared by the horizontal footprints of two (2, 3) boxes grown by `margin`."""
    sides = np.minimum(a[1, :2], b[1, :2]) - np.maximum(a[0, :2], b[0, :2]) + 2 * margin
    return float(np.prod(np.clip(sides, 0.0, None)))


class Layout:
    """Moves objects over the task's support surface (table or floor) without overlaps. Footprints are world
    boxes of the collision geometry grown by MARGIN; the surface under a point is found by casting a ray down
    onto the static (world-welded) geometry."""

    MARGIN = 0.01

    def __init__(self, env, bodies, pending: Sequence[str] = ()):
        import mujoco

        self.env, self.bodies = env, bodies
        self.model, self.data = env.sim.model._model, env.sim.data._data
        mujoco.mj_forward(self.model, self.data)
        self.boxes = {n: bodies.boxes(self.data, n, np.eye(3)) for n in bodies.kind if n not in pending}
        objects = [n for n in self.boxes if bodies.kind[n] == "object"]
        below = [self.surface_below((self.boxes[n][0] + self.boxes[n][1])[:2] / 2, n) for n in objects]
        heights = [z for z, static in below if static]
        self.surface = float(np.median(heights)) if heights else 0.0
        low = np.min([self.boxes[n][0, :2] for n in objects], axis=0) - 0.08
        high = np.max([self.boxes[n][1, :2] for n in objects], axis=0) + 0.08
        self.area = np.stack([low, high])  # where this task's objects lie, grown by 8 cm

    def surface_below(self, xy: np.ndarray, exclude: str | None = None) -> tuple[float, bool]:
        """Height of the first collision geometry under (x, y) (passing through `exclude`), and whether it is
        static (welded to the world: table, floor, fixture) rather than a movable object."""
        owner = self.bodies.owner
        hit = first_hit(self.model, self.data, [xy[0], xy[1], 3.0], [0.0, 0.0, -1.0],
                        skip=lambda body: exclude is not None and owner.get(body) == exclude)
        if hit is None:
            return 0.0, False
        return float(hit[0][2]), bool(self.model.body_weldid[self.model.geom_bodyid[hit[1]]] == 0)

    def _free(self, name: str, box: np.ndarray) -> bool:
        """Inside the task's area, over the support surface itself, and overlapping no other footprint more
        than `name` did before the move (objects of a task may start touching: a bowl next to a plate)."""
        if np.any(box[0, :2] < self.area[0]) or np.any(box[1, :2] > self.area[1]):
            return False
        for corner in ([box[0, 0], box[0, 1]], [box[0, 0], box[1, 1]], [box[1, 0], box[0, 1]], [box[1, 0], box[1, 1]],
                       (box[0, :2] + box[1, :2]) / 2):
            z, static = self.surface_below(np.array(corner), name)
            if not static or abs(z - self.surface) > 0.01:  # off the table, or onto an object or a fixture
                return False
        before = self.boxes.get(name)
        for other, b in self.boxes.items():
            if other != name and _overlap(box, b, self.MARGIN) > (0.0 if before is None else _overlap(before, b, self.MARGIN)):
                return False
        return True

    def _joint_address(self, name: str) -> int:
        return self.env.sim.model.get_joint_qpos_addr(self.env.get_object(name).joints[-1])[0]

    def displace(self, distance: float, variant: int) -> float:
        """Move each object of interest that rests on the support surface by `distance` (shrunk to fit:
        100/75/50/25%) in a direction seeded by `variant`, turning by 15-degree steps until free; returns the
        mean distance applied (0 when no object of interest rests on the surface)."""
        rng = np.random.default_rng(variant)
        applied = []
        for name in self.env.obj_of_interest:
            if self.bodies.kind.get(name) != "object":
                continue  # a fixture or a region
            box = self.boxes[name]
            z, static = self.surface_below((box[0, :2] + box[1, :2]) / 2, name)
            if not static or abs(z - self.surface) > 0.01:
                continue  # in a drawer, on another object or a fixture: leave it
            start = rng.uniform(0, 2 * np.pi)
            moved = 0.0
            for scale in (1.0, 0.75, 0.5, 0.25):
                for k in range(24):
                    angle = start + k * np.pi / 12
                    shift = scale * distance * np.array([np.cos(angle), np.sin(angle), 0.0])
                    if self._free(name, box + shift):
                        address = self._joint_address(name)
                        self.data.qpos[address: address + 3] += shift
                        self.boxes[name] = box + shift
                        moved = scale * distance
                        break
                if moved:
                    break
            applied.append(moved)
        return round(float(np.mean(applied)), 4) if applied else 0.0

    def place_distractors(self, names: Sequence[str], variant: int) -> list[str]:
        """Put each distractor upright on a free spot of the support surface (rejection sampling seeded by
        `variant`); one that finds no spot stays parked away from the scene and is left out of the list."""
        rng = np.random.default_rng(variant)
        placed = []
        for name in names:
            address = self._joint_address(name)
            box = self.bodies.boxes(self.data, name, np.eye(3))  # parked upright by restore_state_with_extras
            lift = self.surface + 0.002 - box[0, 2]
            for _ in range(300):
                xy = rng.uniform(self.area[0], self.area[1])
                shift = np.array([xy[0] - (box[0, 0] + box[1, 0]) / 2, xy[1] - (box[0, 1] + box[1, 1]) / 2, lift])
                if self._free(name, box + shift):  # `name` has no footprint yet: no overlap allowed
                    self.data.qpos[address: address + 3] += shift
                    self.boxes[name] = box + shift
                    placed.append(name)
                    break
        return placed
