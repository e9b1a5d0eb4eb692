"""The LIBERO environment (`LiberoEnv`): one LIBERO simulator reused across episodes, its reset (init state,
settle steps, hard or proven-soft reset), step, and observation (rendered cameras, depth, segmentation,
proprio, privileged state). See suites/libero.py for the protocol and the extension points.

Rendering (suites/render_savings.py). `render="exact"` (the default protocol) draws robosuite's own way,
except where suites/render_proof.json proved a saving bit-identical for the (suite, task, camera, size) on
this stack; a guard re-checks it at every episode start and falls back to the full path (the outcome is in
the episode's info, `render`). `render="fast"` (MSAA off) changes pixels: its own protocol identity.
Resets (suites/render_resets.py): LIBERO hard-resets on every episode; a soft reset (model kept) is used
only where suites/reset_proof.json proved it reproduces the hard reset's trajectories (info: `reset`).

Image geometry. MuJoCo reads pixels back bottom row first, so LIBERO's raw image is the pinhole view
flipped vertically; OpenVLA's 180-degree rotation of it is therefore the pinhole view mirrored left-right.
A mirror is no rigid motion, so it lives in the intrinsics: `Observation.intrinsics[role]` has fx < 0
(OpenCV convention otherwise: pixel centres at integer coordinates, x right, y down), and
`Observation.extrinsics[role]` is the proper camera-to-world pose with OpenCV camera axes (z forward,
y down). Lifting pixel (u=col, v=row) with depth z: X_cam = ((u-cx)/fx*z, (v-cy)/fy*z, z), X_world =
E @ X_cam. Depth is metric z-depth (robosuite's `get_real_depth_map`); depth and segmentation are resized
nearest-neighbour (segmentation and privileged state: suites/libero_state.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from lamp_bench.harness import config
from lamp_bench.harness.policy import CAMERA_ROLES, Observation, PolicyNeeds
from lamp_bench.harness.suite import Episode, StepResult, SuiteEnv
from lamp_bench.suites.images import resize_nearest, resize_rgb
from lamp_bench.suites.libero_protocol import CAMERAS, NOOP_ACTION, LiberoProtocol, LiberoTaskSpec
from lamp_bench.suites.libero_stack import import_libero
from lamp_bench.suites.libero_state import BodyIndex, privileged_state
from lamp_bench.suites.render_savings import EpisodeRendering, RenderSetup, fast_render_xml


class LiberoEnv(SuiteEnv):
    """One LIBERO simulator reused across episodes; rebuilt only when the task's `build_key` changes."""

    def __init__(self, task_spec: Callable[[int], LiberoTaskSpec], needs: PolicyNeeds, protocol: LiberoProtocol,
                 assets: Path):
        unknown = [role for role in needs.cameras if role not in CAMERAS]
        if unknown:
            raise config.ConfigError(f"LIBERO has no camera role {unknown}; roles: {', '.join(CAMERAS)} (see {CAMERA_ROLES})")
        if (needs.depth or needs.segmentation) and not needs.cameras:
            raise config.ConfigError("depth/segmentation need at least one camera in PolicyNeeds.cameras")
        self.task_spec = task_spec
        self.needs = needs
        self.protocol = protocol
        self.assets = assets
        self._env = None  # LIBERO's ControlEnv
        self._build_key: str | None = None
        self._spec: LiberoTaskSpec | None = None
        self._bodies: BodyIndex | None = None
        self.render_setup = RenderSetup()  # no savings unless the suite hands a proof (LiberoSuite.make_env)
        self.soft_reset_allowed: Callable[[int], bool] = lambda task_id: False  # LiberoSuite.make_env sets it
        self._reset_kind = "hard"
        self._rendering: EpisodeRendering | None = None

    # -- extension points ---------------------------------------------------------------------------

    def env_kwargs(self, spec: LiberoTaskSpec) -> dict[str, Any]:
        size = self.protocol.render_size
        return {
            "bddl_file_name": str(spec.bddl_file),
            "camera_names": [CAMERAS[role] for role in self.needs.cameras] or ["agentview"],
            "camera_heights": size,
            "camera_widths": size,
            # This env renders its own cameras once per policy step (not during settle steps); with no
            # camera the offscreen renderer is never created.
            "use_camera_obs": False,
            "has_renderer": False,
            "has_offscreen_renderer": bool(self.needs.cameras),
        }

    def on_reset(self, episode: Episode, spec: LiberoTaskSpec) -> None:
        """Change the freshly reset simulator before the settle steps (see suites/libero.py's docstring)."""

    def postprocess(self, observation: Observation) -> Observation:
        return observation

    @property
    def sim_env(self):
        """The underlying robosuite environment (a LIBERO BDDLBaseDomain)."""
        if self._env is None:
            raise RuntimeError("the LIBERO environment is built by the first reset()")
        return self._env.env

    # -- SuiteEnv -----------------------------------------------------------------------------------

    def reset(self, episode: Episode) -> Observation:
        spec = self.task_spec(episode.task_id)
        states = spec.init_states
        if states is not None and not 0 <= episode.init_index < len(states):
            raise config.ConfigError(f"task {episode.task_id} has init states 0..{len(states) - 1}; got {episode.init_index}")
        self._end_rendering()  # before the reset frees the model and GL context it draws with
        built = spec.build_key != self._build_key
        if built:
            self._build(spec)
        # A soft reset keeps the loaded model: only where proven, never right after a build (the first load
        # applies env edits such as fast rendering's), never when on_reset edits the model.
        soft = not built and type(self).on_reset is LiberoEnv.on_reset and self.soft_reset_allowed(episode.task_id)
        self.sim_env.hard_reset = not soft
        self._reset_kind = "soft" if soft else "hard"
        self._spec = spec
        self._env.seed(episode.seed)  # LIBERO seeds numpy's global generator (its placement sampler)
        self._env.reset()
        if soft:
            _fresh_gripper_state(self.sim_env)
        if states is not None:
            expected = self.sim_env.sim.get_state().flatten().shape[0]
            if states.shape[1] != expected:
                raise config.ConfigError(f"init states have {states.shape[1]} values; {spec.bddl_file.name} needs {expected}")
            self._env.set_init_state(states[episode.init_index])
        self._bodies = BodyIndex(self.sim_env)  # a hard reset reloads the model
        self.on_reset(episode, spec)
        raw = None
        for _ in range(self.protocol.settle_steps):
            raw, _, _, _ = self._env.step(NOOP_ACTION)
        if raw is None:
            raw = self.sim_env._get_observations()
        self._start_rendering(episode)
        return self._observe(raw)

    def step(self, action: np.ndarray) -> StepResult:
        if self._env is None:
            raise RuntimeError("step() before reset()")
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != NOOP_ACTION.shape or not np.all(np.isfinite(action)):
            raise ValueError(f"LIBERO needs a finite 7-DoF action; got {np.array2string(action, precision=3)}")
        # The canonical action is LIBERO's own convention (OSC_POSE deltas, gripper -1 open / +1 close).
        raw, _, done, _ = self._env.step(np.clip(action, -1.0, 1.0))
        success = bool(done)
        return StepResult(self._observe(raw), success=success, done=success)

    def episode_info(self) -> dict[str, Any]:
        info = {"reset": self._reset_kind}
        if self._rendering is not None:
            info["render"] = self._rendering.info
        return info

    def close(self) -> None:
        self._end_rendering()
        if self._env is not None:
            self._env.close()
            self._env = None
            self._build_key = None

    # -- internals ----------------------------------------------------------------------------------

    def _build(self, spec: LiberoTaskSpec) -> None:
        _, control_env = import_libero(self.assets)
        self.close()
        if not spec.bddl_file.is_file():
            raise config.ConfigError(f"BDDL file {spec.bddl_file} does not exist")
        self._env = control_env(**self.env_kwargs(spec))
        if self.render_setup.mode == "fast":  # applies from the next (re)load of the model on
            self._env.env.set_xml_processor(fast_render_xml(self.protocol.render_size))
        self._build_key = spec.build_key

    def _start_rendering(self, episode: Episode) -> None:
        """Render paths for this episode (a hard reset loaded a new model), checked by the guard."""
        if self.needs.cameras:
            self._rendering = EpisodeRendering(self.render_setup, self.sim_env.sim, self.protocol.render_size,
                                               episode.task_id, [CAMERAS[r] for r in self.needs.cameras],
                                               self.needs.depth)

    def _end_rendering(self) -> None:
        if self._rendering is not None:
            self._rendering.close()
            self._rendering = None

    def _observe(self, raw: dict[str, np.ndarray]) -> Observation:
        needs = self.needs
        obs = Observation(self._spec.instruction)
        for role in needs.cameras:
            self._render(role, obs)
        if needs.proprio:
            obs.proprio = np.concatenate(
                [raw["robot0_eef_pos"], raw["robot0_eef_quat"], raw["robot0_gripper_qpos"]]
            ).astype(np.float32)
        if needs.privileged:
            obs.privileged = privileged_state(self.sim_env, self._bodies, raw)
        if needs.segmentation:
            obs.privileged["segmentation_names"] = self._bodies.segmentation_names
        return self.postprocess(obs)

    def _render(self, role: str, obs: Observation) -> None:
        sim = self.sim_env.sim
        camera, size, out = CAMERAS[role], self.protocol.render_size, self.needs.image_size
        rgb, depth = self._rendering.frame(camera)
        obs.images[role] = resize_rgb(rgb[::-1, ::-1], out)  # OpenVLA's 180-degree rotation
        fovy = float(sim.model.cam_fovy[sim.model.camera_name2id(camera)])
        obs.intrinsics[role] = mirrored_intrinsics(fovy, out)
        obs.extrinsics[role] = camera_to_world(sim, camera)
        if depth is not None:
            from robosuite.utils.camera_utils import get_real_depth_map

            metres = get_real_depth_map(sim, depth)[::-1, ::-1]
            obs.depth[role] = resize_nearest(metres, out).astype(np.float32)
        if self.needs.segmentation:
            bodies = self._bodies.render_body_ids(sim, camera, size)
            obs.segmentation[role] = resize_nearest(bodies[::-1, ::-1], out)



def _fresh_gripper_state(env) -> None:
    """A hard reset builds new gripper models; a soft reset keeps them, and robosuite's grippers integrate
    their command (`current_action` moves by `speed` towards each action's sign), so the last episode's
    gripper command would carry over. Set it back to a fresh gripper's zeros."""
    for robot in env.robots:
        if hasattr(robot.gripper, "current_action"):
            robot.gripper.current_action = np.zeros(robot.gripper.dof)



# ---------------------------------------------------------------------------------------------- geometry


def mirrored_intrinsics(fovy_degrees: float, size: int) -> np.ndarray:
    """Intrinsics of the delivered (rotated = left-right mirrored, resized) square image; fx < 0."""
    f = 0.5 * size / np.tan(np.deg2rad(fovy_degrees) / 2)
    c = size / 2 - 0.5
    return np.array([[-f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])


def camera_to_world(sim, camera: str) -> np.ndarray:
    """4x4 camera pose with OpenCV axes (x right, y down, z forward) in the world frame."""
    cam = sim.model.camera_name2id(camera)
    pose = np.eye(4)
    pose[:3, :3] = sim.data.cam_xmat[cam].reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])  # MuJoCo looks along -z
    pose[:3, 3] = sim.data.cam_xpos[cam]
    return pose
