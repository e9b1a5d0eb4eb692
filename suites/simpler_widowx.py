"""SimplerEnv-WidowX: the four BridgeData tasks of SimplerEnv on ManiSkill3 (`mani-skill` 3.0.1, `sapien` 3.0.3).

Tasks (ManiSkill env ids): PutSpoonOnTableClothInScene-v1, PutCarrotOnPlateInScene-v1,
StackGreenCubeOnYellowCubeBakedTexInScene-v1, PutEggplantInBasketScene-v1.

Protocol (SimplerEnv's): 24 episodes per task; episode i places the objects in configuration i (ManiSkill's
`episode_id`, SimplerEnv's `--obj-episode-range 0 24`); control at 5 Hz; 60 policy steps (eggplant 120);
no settle steps beyond the env's own. Success is judged once, at the final step, as SimplerEnv does
(an object dropped on the target and knocked off again fails): `StepResult.success` is False before the
last step and `done` is True only at the last step, so the runner never ends an episode early.
`episode_info()` adds SimplerEnv's other metrics: `partial_success` (the source object was grasped at
some step), `consecutive_grasp` (grasped for 5 consecutive steps at some point), and `success_once`
(the success predicate held at some step).

Action conversion (suite-agnostic 7-DoF form -> the env's `arm_pd_ee_target_delta_pose_align2` +
`gripper_pd_joint_pos` controller):
  * translation: action[:3] * 0.05 m (the harness scale, 1.0 = 5 cm per step), in the robot *base* frame,
    as BridgeData's actions are; the WidowX base is turned 180 degrees about z here, so base +x is world -x
    and base +y is world -y. The delta is added to the controller's previous target, not to the measured
    pose (ManiSkill's `use_target=True`).
  * rotation: action[3:6] * 0.5 rad, axis-angle in the base frame about the end effector; the controller
    reads intrinsic XYZ Euler angles, so the suite converts exactly (`to_env_action`).
  * gripper: the harness' -1 open / +1 close is negated into ManiSkill's +1 open / -1 close (a joint
    target linear in the value, fingers 0.014-0.038 m).
A model trained on BridgeData in metres/radians divides by 0.05 / 0.5 to reach this form.

Observations: role `third_person` is the 640x480 `3rd_view_camera` with SimplerEnv's green-screen (the real
BridgeData photo pasted behind the robot and task objects), resized to `PolicyNeeds.image_size` square
(Lanczos, aspect not kept, as OpenVLA's SimplerEnv evaluation does). Depth (metres, from the simulated
geometry: the photo's scene has no depth, so the table is the stand-in slab) and segmentation (ManiSkill
per-scene ids, 0 = nothing; `privileged["segmentation_names"]` names them) are resized nearest-neighbour.
Intrinsics are those of the resized image (OpenCV convention); extrinsics are camera-to-world with OpenCV
axes. Depth needs the env's observation modes extended (`_SimplerEnv.SUPPORTED_OBS_MODES`); with no camera
the env renders nothing (obs mode "none"). `proprio`: end-effector position (world), quaternion xyzw
(world), the two finger joints. `privileged` (scripted policies; see `privileged_state`): robot
"widowx", end-effector and base poses, the controller's target pose, every task object's pose, world box
and model extents, the goal, and whether the source object is grasped.

Assets: the suite's `assets=` folder, else $LAMP_BENCH_MANISKILL_ASSETS, else ManiSkill's own
$MS_ASSET_DIR / ~/.maniskill; the folder holds `data/robots/widowx` and `data/tasks/bridge_v2_real2sim_dataset`.
ManiSkill reads the folder at import, so the suite sets MS_ASSET_DIR before importing it, and a process
can only use one folder. Backends: `sim_backend="cpu"` (one env per process); `render_backend="auto"`
renders on the GPU when torch sees CUDA, else with SAPIEN's CPU (lavapipe Vulkan) renderer.
"""
from __future__ import annotations

import functools
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lamp_bench.harness import config
from lamp_bench.harness.policy import CAMERA_ROLES, Observation, PolicyNeeds, Task
from lamp_bench.harness.provenance import hash_tree_listing, package_versions
from lamp_bench.harness.registry import register_suite
from lamp_bench.harness.suite import Episode, StepResult, Suite, SuiteEnv
from lamp_bench.suites.images import resize_nearest, resize_rgb

SUITE = "simpler_widowx"
BRIDGE_DATA = "data/tasks/bridge_v2_real2sim_dataset"
CAMERAS = {"third_person": "3rd_view_camera"}
POS_SCALE = 0.05  # metres per unit action (the harness convention)
ROT_SCALE = 0.5  # radians per unit action
EE_LINK = "ee_gripper_link"


@dataclass(frozen=True)
class WidowXTask:
    env_id: str
    instruction: str  # the env's get_language_instruction(), checked when the env is built
    max_steps: int
    relation: str  # goal predicate: source object "on"/"in" target


TASKS = (
    WidowXTask("PutSpoonOnTableClothInScene-v1", "put the spoon on the towel", 60, "on"),
    WidowXTask("PutCarrotOnPlateInScene-v1", "put carrot on plate", 60, "on"),
    WidowXTask("StackGreenCubeOnYellowCubeBakedTexInScene-v1", "stack the green block on the yellow block", 60, "on"),
    WidowXTask("PutEggplantInBasketScene-v1", "put eggplant into yellow basket", 120, "in"),
)


@dataclass(frozen=True)
class SimplerProtocol:
    episodes_per_task: int = 24  # object configurations 0..23 (SimplerEnv's episode range)
    control_freq: int = 5  # Hz (the envs' own SimConfig; recorded for provenance)
    sim_freq: int = 500


# ---------------------------------------------------------------------------------------------- setup


def resolve_assets(assets: str | os.PathLike | None) -> Path:
    """The ManiSkill asset root: option, then $LAMP_BENCH_MANISKILL_ASSETS, then ManiSkill's own default."""
    path = config.asset_dir(assets, config.MANISKILL_ASSETS_ENV, "ManiSkill", must_contain=BRIDGE_DATA)
    if path is None:
        path = Path(os.environ.get("MS_ASSET_DIR") or Path.home() / ".maniskill").expanduser().resolve()
        if not (path / BRIDGE_DATA).is_dir():
            raise config.ConfigError(
                f"no ManiSkill BridgeData assets in {path}: pass --assets DIR or set {config.MANISKILL_ASSETS_ENV} "
                f"to a folder holding {BRIDGE_DATA} and data/robots/widowx (ManiSkill downloads them with "
                "`python -m mani_skill.utils.download_asset bridge_v2_real2sim` and `... widowx250s`)"
            )
    return path


def import_maniskill(assets: Path):
    """Import ManiSkill's environments reading `assets` (it fixes its asset folder at import time)."""
    if "mani_skill" in sys.modules:
        import mani_skill

        loaded = Path(mani_skill.ASSET_DIR).parent.resolve()
        if loaded != assets:
            raise config.ConfigError(
                f"ManiSkill was already imported in this process with asset folder {loaded}; "
                f"it cannot switch to {assets}: use one ManiSkill asset folder per process"
            )
    else:
        os.environ["MS_ASSET_DIR"] = str(assets)
    import mani_skill.envs
    from mani_skill.utils.registration import REGISTERED_ENVS

    return REGISTERED_ENVS


@functools.cache
def _env_class(env_id: str, assets: Path):
    """The registered env class with depth and "none" observation modes allowed, and ManiSkill's class-level
    green-screen state made per instance."""
    base = import_maniskill(assets)[env_id].cls

    class _SimplerEnv(base):
        # The bridge envs declare only "rgb+segmentation" (the green-screen needs segmentation); depth
        # renders fine, and "none" skips rendering for policies that use no camera.
        SUPPORTED_OBS_MODES = ["rgb+segmentation", "rgb+depth+segmentation", "none"]

        def __init__(self, **kwargs):
            # BaseDigitalTwinEnv keeps these in class attributes that every instance appends to, so a second
            # env in one process would keep the first env's objects out of its green-screen.
            self._rgb_overlay_images = {}
            self._objects_to_remove_from_greenscreen = []
            super().__init__(**kwargs)

    _SimplerEnv.__name__ = f"Simpler{base.__name__}"
    return _SimplerEnv


def placeholders(assets: Path) -> dict[str, str]:
    """Stand-in assets of the pack: folder -> the first line of its PLACEHOLDER.txt."""
    out = {}
    for marker in sorted(assets.rglob("PLACEHOLDER.txt")):
        lines = marker.read_text().strip().splitlines()
        out[str(marker.parent.relative_to(assets))] = lines[0] if lines else ""
    return out


def to_env_action(action: np.ndarray) -> np.ndarray:
    """The harness' 7-DoF action -> the env's (metres, intrinsic XYZ Euler radians, gripper +1 open)."""
    from scipy.spatial.transform import Rotation

    action = np.asarray(action, dtype=np.float64).reshape(-1)
    if action.shape != (7,) or not np.all(np.isfinite(action)):
        raise ValueError(f"SimplerEnv-WidowX needs a finite 7-DoF action; got {np.array2string(action, precision=3)}")
    action = np.clip(action, -1.0, 1.0)
    euler = Rotation.from_rotvec(action[3:6] * ROT_SCALE).as_euler("XYZ")
    return np.concatenate([action[:3] * POS_SCALE, euler, [-action[6]]])


# ---------------------------------------------------------------------------------------------- suite


class SimplerWidowXSuite(Suite):
    """SimplerEnv's four WidowX (BridgeData) tasks; `Task.dataset` is OpenVLA's `bridge_orig`."""

    name = SUITE
    description = "SimplerEnv-WidowX: 4 BridgeData tasks on ManiSkill3 (SimplerEnv protocol)"

    def __init__(self, assets: str | os.PathLike | None = None, sim_backend: str = "cpu",
                 render_backend: str = "auto", protocol: SimplerProtocol | None = None):
        self.assets = resolve_assets(assets)
        self.sim_backend = sim_backend
        self.render_backend = render_backend
        self.protocol = protocol or SimplerProtocol()
        self._tasks = [
            Task(SUITE, i, t.env_id, t.instruction, dataset="bridge_orig",
                 extra={"env_id": t.env_id, "source_suite": SUITE})
            for i, t in enumerate(TASKS)
        ]

    def tasks(self) -> list[Task]:
        return self._tasks

    def max_steps(self, task: Task) -> int:
        return TASKS[task.task_id].max_steps

    def num_init_states(self, task: Task) -> int:
        return self.protocol.episodes_per_task

    def default_episodes_per_task(self) -> int:
        return self.protocol.episodes_per_task

    def make_env(self, needs: PolicyNeeds) -> SimplerWidowXEnv:
        return SimplerWidowXEnv(self, needs)

    def resolved_render_backend(self) -> str:
        if self.render_backend != "auto":
            return self.render_backend
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"

    def provenance(self) -> dict[str, Any]:
        stand_ins = placeholders(self.assets)
        versions = package_versions()
        return {
            "suite": SUITE,
            "assets": str(self.assets),
            "assets_identity": hash_tree_listing(str(self.assets)),
            "assets_stand_ins": stand_ins,
            "comparable": not stand_ins,
            "assets_note": (
                "asset pack has stand-ins (" + "; ".join(f"{k}: {v}" for k, v in stand_ins.items()) + "): "
                "not comparable with published SimplerEnv results" if stand_ins else "original ManiSkill BridgeData assets"
            ),
            "versions": {k: versions.get(k) for k in ("mani-skill", "sapien", "torch")},
            "sim_backend": self.sim_backend,
            "render_backend": self.resolved_render_backend(),
            "protocol": asdict(self.protocol),
            "action_scale": {"position_m": POS_SCALE, "rotation_rad": ROT_SCALE},
        }

    def protocol_fields(self) -> dict[str, Any]:
        """The episode conditions records are keyed by (see Suite.protocol_fields)."""
        return {"suite": SUITE, **asdict(self.protocol), "cameras": CAMERAS,
                "max_steps": {t.env_id: t.max_steps for t in TASKS},
                "action_scale": {"position_m": POS_SCALE, "rotation_rad": ROT_SCALE},
                "assets_identity": hash_tree_listing(str(self.assets))}


# ---------------------------------------------------------------------------------------------- env


class SimplerWidowXEnv(SuiteEnv):
    """One ManiSkill env reused across episodes; rebuilt only when the task (env id) changes."""

    def __init__(self, suite: SimplerWidowXSuite, needs: PolicyNeeds):
        unknown = [role for role in needs.cameras if role not in CAMERAS]
        if unknown:
            raise config.ConfigError(
                f"SimplerEnv-WidowX has no camera role {unknown}; it has only {', '.join(CAMERAS)} "
                f"(roles: {', '.join(CAMERA_ROLES)})"
            )
        if (needs.depth or needs.segmentation) and not needs.cameras:
            raise config.ConfigError("depth/segmentation need the third_person camera in PolicyNeeds.cameras")
        self.suite = suite
        self.needs = needs
        self.obs_mode = (
            "none" if not needs.cameras else "rgb+depth+segmentation" if needs.depth else "rgb+segmentation"
        )
        self._env = None
        self._task: WidowXTask | None = None
        self._steps = 0
        self._metrics: dict[str, bool] = {}
        self._local_vertices: dict[str, np.ndarray] = {}
        self._local_com: dict[str, np.ndarray] = {}
        render = suite.resolved_render_backend()
        if render == "cpu" and (os.cpu_count() or 1) <= 4:
            # Software Vulkan and torch's thread pool fight for a small machine's cores (3x slower steps).
            import torch

            torch.set_num_threads(1)

    # -- SuiteEnv -----------------------------------------------------------------------------------

    def reset(self, episode: Episode) -> Observation:
        if not 0 <= episode.task_id < len(TASKS):
            raise config.ConfigError(f"{SUITE} has tasks 0..{len(TASKS) - 1}; got task id {episode.task_id}")
        if not 0 <= episode.init_index < self.suite.protocol.episodes_per_task:
            raise config.ConfigError(
                f"{SUITE} has object configurations 0..{self.suite.protocol.episodes_per_task - 1}; "
                f"got init index {episode.init_index}"
            )
        task = TASKS[episode.task_id]
        if self._task is None or task.env_id != self._task.env_id:
            self._build(task)
        # Reconfiguring rebuilds the physics scene (~0.4 s): without it, object velocities, contact caches and
        # the arm's last pose leak into the next episode's settling, so results would depend on episode order.
        obs, _ = self._env.reset(seed=episode.seed, options={"episode_id": episode.init_index, "reconfigure": True})
        self._steps = 0
        self._metrics = {"partial_success": False, "consecutive_grasp": False, "success_once": False}
        self._local_vertices = {name: _local_collision_vertices(actor) for name, actor in self._objects().items()}
        self._local_com = {
            name: actor.cmass_local_pose.p[0].cpu().numpy().astype(np.float64) for name, actor in self._objects().items()
        }
        return self._observe(obs)

    def step(self, action: np.ndarray) -> StepResult:
        if self._env is None:
            raise RuntimeError("step() before reset()")
        import torch

        env_action = torch.as_tensor(to_env_action(action), dtype=torch.float32)[None]
        obs, _, _, _, info = self._env.step(env_action)
        self._steps += 1
        grasped = bool(info["is_src_obj_grasped"].item())
        self._metrics["partial_success"] |= grasped
        self._metrics["consecutive_grasp"] |= bool(info["consecutive_grasp"].item())
        self._metrics["success_once"] |= bool(info["success"].item())
        last = self._steps >= self._task.max_steps
        success = last and bool(info["success"].item())  # judged at the final step only (SimplerEnv)
        return StepResult(self._observe(obs), success=success, done=last)

    def episode_info(self) -> dict[str, Any]:
        return dict(self._metrics)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
            self._task = None

    # -- internals ----------------------------------------------------------------------------------

    def _build(self, task: WidowXTask) -> None:
        self.close()
        cls = _env_class(task.env_id, self.suite.assets)
        self._env = cls(
            obs_mode=self.obs_mode, num_envs=1,
            sim_backend=self.suite.sim_backend, render_backend=self.suite.resolved_render_backend(),
        )
        self._task = task
        instruction = self._env.get_language_instruction()[0]
        if instruction != task.instruction:
            raise RuntimeError(f"{task.env_id} now says {instruction!r}, lamp-bench expects {task.instruction!r}")

    def _objects(self) -> dict[str, Any]:
        env = self._env
        objects = dict(env.objs)
        if getattr(env, "sink", None) is not None:
            objects["sink"] = env.sink
        return objects

    def _observe(self, raw: dict[str, Any]) -> Observation:
        env = self._env
        obs = Observation(self._task.instruction)
        size = self.needs.image_size
        for role in self.needs.cameras:
            camera = CAMERAS[role]
            data, param = raw["sensor_data"][camera], raw["sensor_param"][camera]
            rgb = data["rgb"][0].cpu().numpy()
            height, width = rgb.shape[:2]
            obs.images[role] = resize_rgb(rgb, size)
            obs.intrinsics[role] = resized_intrinsics(param["intrinsic_cv"][0].cpu().numpy(), width, height, size)
            world_to_cam = np.eye(4)
            world_to_cam[:3] = param["extrinsic_cv"][0].cpu().numpy()
            obs.extrinsics[role] = np.linalg.inv(world_to_cam)
            if self.needs.depth:
                depth = data["depth"][0, ..., 0].cpu().numpy().astype(np.float32) / 1000.0  # int16 millimetres
                obs.depth[role] = resize_nearest(depth, size)
            if self.needs.segmentation:
                ids = data["segmentation"][0, ..., 0].cpu().numpy().astype(np.int32)
                obs.segmentation[role] = resize_nearest(ids, size)
        robot = env.agent.robot
        qpos = robot.get_qpos()[0].cpu().numpy()
        ee = _pose(robot.links_map[EE_LINK].pose)
        if self.needs.proprio:
            obs.proprio = np.concatenate([ee[0], ee[1], qpos[-2:]]).astype(np.float32)
        if self.needs.privileged:
            obs.privileged = self._privileged(ee, qpos)
        if self.needs.segmentation:
            obs.privileged["segmentation_names"] = {
                int(i): getattr(o, "name", str(o)) for i, o in env.segmentation_id_map.items()
            }
        return obs

    def _privileged(self, ee: tuple[np.ndarray, np.ndarray], qpos: np.ndarray) -> dict[str, Any]:
        """Simulator state for scripted policies; metres, quaternions xyzw, world frame."""
        from scipy.spatial.transform import Rotation

        env = self._env
        base = _pose(env.agent.robot.pose)
        target_pos, target_quat = _pose_at(base, _pose(env.agent.controller.controllers["arm"]._target_pose))
        objects = {}
        for name, actor in self._objects().items():
            pos, quat = _pose(actor.pose)
            kind = "source" if name == env.source_obj_name else "target" if name == env.target_obj_name else "fixture"
            box = self._model_extents(name)
            objects[name] = {
                "kind": kind,
                "pos": pos,
                "quat": quat,
                "com": pos + Rotation.from_quat(quat).apply(self._local_com[name]),  # centre of mass
                "aabb": _world_aabb(self._local_vertices[name], pos, quat),  # (2, 3) collision geometry
                "size": box,  # (3,) model extents along the object's own axes
                "points": self._local_vertices[name],  # (<= 512, 3) collision vertices, object frame
            }
        return {
            "robot": "widowx",
            "eef_pos": ee[0],
            "eef_quat": ee[1],
            "eef_target_pos": target_pos,  # where the controller drives the hand (deltas add to this)
            "eef_target_quat": target_quat,
            "base_pos": base[0],  # the frame action deltas are expressed in
            "base_quat": base[1],
            "gripper_qpos": qpos[-2:].copy(),
            "objects": objects,
            "goal": [(self._task.relation, env.source_obj_name, env.target_obj_name)],
            "grasped": bool(env.agent.is_grasping(env.objs[env.source_obj_name]).item()),
        }

    def _model_extents(self, name: str) -> np.ndarray:
        env = self._env
        if name in getattr(env, "episode_model_bbox_sizes", {}):
            return env.episode_model_bbox_sizes[name].cpu().numpy().astype(np.float64)
        low, high = self._local_vertices[name].min(axis=0), self._local_vertices[name].max(axis=0)
        return high - low


# ---------------------------------------------------------------------------------------------- geometry


def resized_intrinsics(k: np.ndarray, width: int, height: int, size: int) -> np.ndarray:
    """OpenCV intrinsics of a width x height image stretched to size x size (pixel centres at integers)."""
    sx, sy = size / width, size / height
    out = np.array(k, dtype=np.float64)
    out[0, 0] *= sx
    out[1, 1] *= sy
    out[0, 2] = (k[0, 2] + 0.5) * sx - 0.5
    out[1, 2] = (k[1, 2] + 0.5) * sy - 0.5
    return out


def _pose(pose) -> tuple[np.ndarray, np.ndarray]:
    """A ManiSkill Pose (wxyz) -> (position, quaternion xyzw) float64 numpy."""
    raw = pose.raw_pose[0].cpu().numpy().astype(np.float64)
    return raw[:3].copy(), np.concatenate([raw[4:7], raw[3:4]])


def _pose_at(frame: tuple[np.ndarray, np.ndarray], local: tuple[np.ndarray, np.ndarray]):
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_quat(frame[1])
    return frame[0] + rot.apply(local[0]), (rot * Rotation.from_quat(local[1])).as_quat()


def _local_collision_vertices(actor, limit: int = 512) -> np.ndarray:
    """Collision-mesh vertices in the actor's frame, evenly thinned to at most `limit`."""
    mesh = actor.get_first_collision_mesh(to_world_frame=False)
    if mesh is None:
        return np.zeros((1, 3))
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    return vertices[:: -(-len(vertices) // limit)].copy()


def _world_aabb(vertices: np.ndarray, pos: np.ndarray, quat: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    world = Rotation.from_quat(quat).apply(vertices) + pos
    return np.stack([world.min(axis=0), world.max(axis=0)])


register_suite(SUITE)(SimplerWidowXSuite)
