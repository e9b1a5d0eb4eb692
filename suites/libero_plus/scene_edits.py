"""Scene edits of the lamp-bench backend, applied after every reset: the camera moved (Camera Viewpoints), the arm's
joints offset (Robot Initial States), the lights changed (Light Conditions), the surfaces retextured (Background
Textures). `first_hit` is the ray cast they and the object layout share."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from lamp_bench.harness import config

# ---------------------------------------------------------------------------------------------- camera


def first_hit(model, data, point: np.ndarray, direction: np.ndarray, skip=lambda body: False):
    """(hit point, geom id) of the first collision geometry along a ray (visual-only geometry and bodies for
    which `skip` is true are passed through), or None."""
    import mujoco

    point, direction = np.asarray(point, float), np.asarray(direction, float) / np.linalg.norm(direction)
    geom = np.zeros(1, dtype=np.int32)
    for _ in range(50):
        distance = mujoco.mj_ray(model, data, point, direction, None, 1, -1, geom)
        if distance < 0:
            return None
        hit, g = point + distance * direction, int(geom[0])
        if (model.geom_contype[g] or model.geom_conaffinity[g]) and not skip(model.geom_bodyid[g]):
            return hit, g
        point = hit + 1e-4 * direction
    return None


def move_camera(env, camera: str, orbit_deg: float, elevation_deg: float, distance_scale: float, yaw_deg: float,
                pitch_deg: float) -> None:
    """Orbit a fixed camera about the point its optical axis meets the scene's geometry, scale its distance to
    that point, then turn it in place; LIBERO-Plus's order of rotations (world axes):
    R = Ry(-pitch) Rz(yaw) Rz(orbit) Ry(-elevation)."""
    from scipy.spatial.transform import Rotation

    model = env.sim.model._model
    cam = env.sim.model.camera_name2id(camera)
    if model.cam_bodyid[cam] != 0:
        raise ValueError(f"camera {camera!r} is not fixed in the world; cannot move it")
    rot = Rotation.from_quat(model.cam_quat[cam], scalar_first=True)
    forward = rot.apply([0.0, 0.0, -1.0])  # MuJoCo cameras look along their -z
    position = model.cam_pos[cam].copy()
    hit = first_hit(model, env.sim.data._data, position, forward)
    pivot = hit[0] if hit is not None else position + forward
    orbit = Rotation.from_euler("z", orbit_deg, degrees=True) * Rotation.from_euler("y", -elevation_deg, degrees=True)
    turn = Rotation.from_euler("y", -pitch_deg, degrees=True) * Rotation.from_euler("z", yaw_deg, degrees=True)
    model.cam_pos[cam] = pivot + distance_scale * orbit.apply(position - pivot)
    model.cam_quat[cam] = (turn * orbit * rot).as_quat(scalar_first=True)


# ---------------------------------------------------------------------------------------------- robot


def offset_robot_joints(env, variant: int, magnitude: float) -> float:
    """Offset the arm joints by `magnitude` radians along a unit direction seeded by `variant`; returns the
    norm of the offset actually applied after clipping to the joint limits."""
    robot = env.robots[0]
    qpos_index = np.asarray(robot._ref_joint_pos_indexes)
    limits = env.sim.model._model.jnt_range[np.asarray(robot._ref_joint_indexes)]
    direction = np.random.default_rng(variant).normal(size=len(qpos_index))
    direction /= np.linalg.norm(direction)
    qpos = env.sim.data.qpos
    start = qpos[qpos_index].copy()
    target = np.clip(start + magnitude * direction, limits[:, 0] + 1e-3, limits[:, 1] - 1e-3)
    qpos[qpos_index] = target
    env.sim.data.qvel[np.asarray(robot._ref_joint_vel_indexes)] = 0.0
    return float(np.linalg.norm(target - start))


# ---------------------------------------------------------------------------------------------- light


def change_lights(env, variant: int, level: int) -> None:
    """Scene lights and headlight: intensity, colour, direction and shadows, magnitude growing with level."""
    import colorsys

    from scipy.spatial.transform import Rotation

    model = env.sim.model._model
    rng = np.random.default_rng(variant)
    factor = math.exp(rng.choice([-1.0, 1.0]) * 0.25 * level)
    weight = 0.1 * level
    tint = (1 - weight) + weight * np.array(colorsys.hsv_to_rgb(rng.random(), 1.0, 1.0))
    axis = np.append(rng.normal(size=2), 0.0)
    tilt = Rotation.from_rotvec(axis / np.linalg.norm(axis) * math.radians(8 * level))
    shadows = rng.random(model.nlight) < level / 5
    for i in range(model.nlight):
        model.light_diffuse[i] = np.clip(model.light_diffuse[i] * factor * tint, 0, 1)
        model.light_specular[i] = np.clip(model.light_specular[i] * factor, 0, 1)
        model.light_dir[i] = tilt.apply(model.light_dir[i])
        model.light_castshadow[i] = bool(shadows[i])
    headlight = model.vis.headlight
    headlight.ambient = np.clip(np.asarray(headlight.ambient) * factor * tint, 0, 1)
    headlight.diffuse = np.clip(np.asarray(headlight.diffuse) * factor * tint, 0, 1)


# ---------------------------------------------------------------------------------------------- textures


def retexture(env, textures: Path, variant: int, surfaces: str) -> dict[str, str]:
    """Replace the pixels of the support surface's (and with "support+floor+walls" also the floor's and the
    walls') textures by texture `variant` of the asset pack's texture set; returns texture -> file used."""
    import mujoco
    from PIL import Image

    bank = sorted(textures.glob("*.png"))
    if not bank:
        raise config.ConfigError(f"no texture images in {textures}: the LIBERO asset pack lacks textures/")
    image = Image.open(bank[(variant - 1) % len(bank)]).convert("RGB")
    model = env.sim.model._model
    names = _surface_textures(model, surfaces)
    context = getattr(env.sim, "_render_context_offscreen", None)
    for tex in names.values():
        width, height, channels = model.tex_width[tex], model.tex_height[tex], model.tex_nchannel[tex]
        if height % width == 0:  # square, or a cube texture's faces stacked
            faces = np.concatenate([np.asarray(image.resize((width, width)))] * (height // width), axis=0)
        else:
            faces = np.asarray(image.resize((width, height)))
        if channels == 4:
            faces = np.concatenate([faces, np.full(faces.shape[:2] + (1,), 255, np.uint8)], axis=2)
        start = model.tex_adr[tex]
        model.tex_data[start: start + width * height * channels] = faces.reshape(-1)
        if context is not None:  # textures were uploaded when the render context was made
            mujoco.mjr_uploadTexture(model, context.con, tex)
    return {name: bank[(variant - 1) % len(bank)].name for name in names}


def _surface_textures(model, surfaces: str) -> dict[str, int]:
    """Texture ids of the visual geoms of the support surface (a table body's top, else the floor), plus the
    floor's and walls' for "support+floor+walls"."""
    import mujoco

    def name(kind, i):
        return mujoco.mj_id2name(model, kind, i) or ""

    def texture_of(geoms) -> dict[str, int]:
        out = {}
        for g in geoms:
            mat = model.geom_matid[g]
            tex = model.mat_texid[mat, mujoco.mjtTextureRole.mjTEXROLE_RGB] if mat >= 0 else -1
            if tex >= 0:
                out[name(mujoco.mjtObj.mjOBJ_TEXTURE, tex) or f"texture{tex}"] = int(tex)
        return out

    visual = [g for g in range(model.ngeom) if model.geom_contype[g] == 0 and model.geom_conaffinity[g] == 0]
    table = [g for g in visual if "table" in name(mujoco.mjtObj.mjOBJ_BODY, model.geom_bodyid[g])
             and "leg" not in name(mujoco.mjtObj.mjOBJ_GEOM, g)]
    floor = [g for g in range(model.ngeom) if name(mujoco.mjtObj.mjOBJ_GEOM, g) == "floor"]
    walls = [g for g in visual if name(mujoco.mjtObj.mjOBJ_GEOM, g).startswith("wall")]
    chosen = texture_of(table) or texture_of(floor)
    if surfaces != "support":
        chosen |= texture_of(floor) | texture_of(walls)
    if not chosen:
        raise RuntimeError("found no textured table, floor or wall to retexture in this LIBERO scene")
    return chosen
