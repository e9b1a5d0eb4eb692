"""Privileged simulator state of a LIBERO episode (`PolicyNeeds.privileged`, for scripted policies) and
the per-model body index behind it and behind segmentation.

`privileged_state`: robot name, end-effector pose and gripper joints, every object's and fixture's pose
and bounding boxes of its collision geometry (overall, along its own axes, and per collision geom), every
articulated joint of a fixture (type, position, world axis, the boxes of the parts it moves, LIBERO's
open/close/turn-on thresholds), the BDDL region sites' poses, sizes and joints, and the goal as parsed
from the BDDL file (lower-case tuples such as ("on", "akita_black_bowl_1", "plate_1")).

Segmentation: per-pixel MuJoCo body ids (int32; -1 = no geometry), the body of the geom seen at that
pixel (`BodyIndex.render_body_ids`). `BodyIndex.segmentation_names` maps every body id to the LIBERO
object or fixture that owns it (e.g. "akita_black_bowl_1", "wooden_cabinet_1"), else to the MuJoCo body
name ("robot0_link7", "gripper0_leftfinger", "world", ...).
"""
from __future__ import annotations

from typing import Any

import numpy as np


class BodyIndex:
    """Static lookups of one loaded model: which bodies and collision geoms belong to which object."""

    def __init__(self, env):
        import mujoco

        model = env.sim.model._model
        self.owner: dict[int, str] = {}  # body id -> LIBERO object/fixture name
        self.object_geoms: dict[str, np.ndarray] = {}
        self.kind: dict[str, str] = {}
        parents = model.body_parentid
        roots = {}
        for table, kind in ((env.objects_dict, "object"), (env.fixtures_dict, "fixture")):
            for name, obj in table.items():
                roots[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, obj.root_body)] = name
                self.kind[name] = kind
        for body in range(model.nbody):
            walk = body
            while walk > 0 and walk not in roots:
                walk = parents[walk]
            if walk in roots:
                self.owner[body] = roots[walk]
        names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, b) or f"body{b}" for b in range(model.nbody)]
        self.segmentation_names = {b: self.owner.get(b, names[b]) for b in range(model.nbody)}
        collides = (model.geom_contype != 0) | (model.geom_conaffinity != 0)
        for name in self.kind:
            geoms = [g for g in range(model.ngeom) if collides[g] and self.owner.get(model.geom_bodyid[g]) == name]
            self.object_geoms[name] = np.array(geoms, dtype=int)
        # articulated fixtures: each joint's collision geoms (those of its body and the bodies below it)
        self.joint_geoms: dict[str, tuple[int, np.ndarray]] = {}
        for name, obj in env.fixtures_dict.items():
            for joint in obj.joints or []:
                jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint)
                if jid < 0:
                    continue
                below = {int(model.jnt_bodyid[jid])}
                for body in range(model.nbody):  # parents come before children
                    if parents[body] in below:
                        below.add(body)
                geoms = [g for g in range(model.ngeom) if collides[g] and model.geom_bodyid[g] in below]
                self.joint_geoms[joint] = (jid, np.array(geoms, dtype=int))
        self.geom_aabb = model.geom_aabb.reshape(-1, 6)  # local centre (3), half size (3)
        self.geom_bodyid = model.geom_bodyid.copy()
        self.site_bodyid = model.site_bodyid.copy()

    def render_body_ids(self, sim, camera: str, size: int) -> np.ndarray:
        """(size, size) int32 body id per pixel, bottom row first like MuJoCo's images (-1: nothing).
        robosuite's own segmentation read-back overflows uint8 arithmetic under numpy 2, so decode here."""
        import mujoco

        context = sim._render_context_offscreen
        context.render(width=size, height=size, camera_id=sim.model.camera_name2id(camera), segmentation=True)
        rgb = np.empty((size, size, 3), dtype=np.uint8)
        mujoco.mjr_readPixels(rgb=rgb, depth=None, viewport=mujoco.MjrRect(0, 0, size, size), con=context.con)
        segid = rgb.astype(np.int32) @ np.array([1, 1 << 8, 1 << 16], dtype=np.int32)  # scene geom index + 1
        scene = context.scn
        lookup = np.full(scene.ngeom + 1, -1, dtype=np.int32)
        for i in range(scene.ngeom):
            geom = scene.geoms[i]
            if geom.segid < 0:
                continue
            if geom.objtype == mujoco.mjtObj.mjOBJ_GEOM:
                lookup[geom.segid + 1] = self.geom_bodyid[geom.objid]
            elif geom.objtype == mujoco.mjtObj.mjOBJ_SITE:
                lookup[geom.segid + 1] = self.site_bodyid[geom.objid]
        segid[segid > scene.ngeom] = 0
        return lookup[segid]

    def geom_boxes(self, data, geoms: np.ndarray, frame: np.ndarray) -> np.ndarray:
        """(n, 2, 3) low/high corners of each geom's bounding box along the axes of `frame` (3x3, world
        axes as columns), in those coordinates; identity gives world AABBs."""
        rot = frame.T @ data.geom_xmat[geoms].reshape(-1, 3, 3)  # geom axes in `frame`
        centre = data.geom_xpos[geoms] @ frame + np.einsum("gij,gj->gi", rot, self.geom_aabb[geoms, :3])
        half = np.einsum("gij,gj->gi", np.abs(rot), self.geom_aabb[geoms, 3:])
        return np.stack([centre - half, centre + half], axis=1)

    def parts(self, data, name: str, frame: np.ndarray) -> np.ndarray:
        """(n, 2, 3) boxes of the object's collision geoms along the axes of `frame`."""
        geoms = self.object_geoms[name]
        if geoms.size == 0:
            return np.full((1, 2, 3), np.nan)
        return self.geom_boxes(data, geoms, frame)

    def boxes(self, data, name: str, frame: np.ndarray) -> np.ndarray:
        """(2, 3) bounding box of the object's collision geometry along the axes of `frame`."""
        parts = self.parts(data, name, frame)
        return np.stack([parts[:, 0].min(axis=0), parts[:, 1].max(axis=0)])


def privileged_state(env, bodies: BodyIndex, raw: dict[str, np.ndarray]) -> dict[str, Any]:
    """Simulator state for scripted policies; positions in metres, quaternions xyzw, world frame."""
    import robosuite.utils.transform_utils as T

    sim = env.sim
    data = sim.data._data
    objects = {}
    for name, kind in bodies.kind.items():
        body = env.obj_body_id[name]
        obj = env.get_object(name)
        axes = data.xmat[body].reshape(3, 3)
        parts = bodies.parts(data, name, np.eye(3))
        local = bodies.boxes(data, name, axes)
        objects[name] = {
            "kind": kind,
            "category": getattr(obj, "category_name", ""),
            "pos": data.xpos[body].copy(),
            "quat": T.convert_quat(data.xquat[body], to="xyzw"),
            "aabb": np.stack([parts[:, 0].min(axis=0), parts[:, 1].max(axis=0)]),  # (2, 3) world box
            "parts": parts,  # (n, 2, 3) world boxes of its collision geoms (a cabinet's panels, drawers, ...)
            # box along the object's own axes (the columns of its rotation matrix): centre in world, half sizes
            "obb_center": axes @ local.mean(axis=0),
            "obb_half": (local[1] - local[0]) / 2,
        }
    joints = {}
    for joint, (jid, geoms) in bodies.joint_geoms.items():
        fixture = bodies.owner[int(sim.model.jnt_bodyid[jid])]
        ranges = env.get_object(fixture).object_properties.get("articulation", {})
        joints[joint] = {
            "fixture": fixture,
            "type": "slide" if sim.model.jnt_type[jid] == 2 else "hinge",
            "qpos": float(data.qpos[sim.model.jnt_qposadr[jid]]),
            "axis": data.xaxis[jid].copy(),  # world direction a positive qpos change moves/turns along
            "anchor": data.xanchor[jid].copy(),
            "parts": bodies.geom_boxes(data, geoms, np.eye(3)),  # (n, 2, 3) world boxes of the moving geoms
            # LIBERO's predicate thresholds, e.g. {"open": [lo, hi], "close": [lo, hi]} or turnon/turnoff
            "ranges": {k.removeprefix("default_").removesuffix("_ranges"): list(v) for k, v in ranges.items() if v},
        }
    sites = {}
    for name, site in env.object_sites_dict.items():
        site_id = sim.model.site_name2id(name)
        sites[name] = {
            "parent": getattr(site, "parent_name", None),
            "pos": data.site_xpos[site_id].copy(),
            "mat": data.site_xmat[site_id].reshape(3, 3).copy(),
            "size": sim.model.site_size[site_id].copy(),
            "joints": list(getattr(site, "joints", None) or []),  # the joints that open/close this region
        }
    return {
        "robot": "panda",
        "eef_pos": raw["robot0_eef_pos"].copy(),
        "eef_quat": raw["robot0_eef_quat"].copy(),
        "gripper_qpos": raw["robot0_gripper_qpos"].copy(),
        "objects": objects,
        "joints": joints,
        "sites": sites,
        "goal": [tuple(str(t).lower() for t in state) for state in env.parsed_problem["goal_state"]],
    }
