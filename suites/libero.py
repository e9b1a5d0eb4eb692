"""The five standard LIBERO suites (libero_spatial, libero_object, libero_goal, libero_10, libero_90) on the
real `libero` 0.1.1 package (robosuite 1.4, MuJoCo 3, CPU rendering), under OpenVLA's evaluation protocol.

Protocol (`LiberoProtocol`): episode i of a task starts from the task's fixed initial state i (50 per
task); 10 settle steps with the no-op action [0,0,0,0,0,0,-1] run inside `reset`; then at most
220/280/300/520/400 policy steps (spatial/object/goal/10/90); success is the task's BDDL goal
(`env.check_success()`, LIBERO's `done`). Images are rendered 256x256, rotated 180 degrees as OpenVLA does
and resized (Lanczos) to `PolicyNeeds.image_size`.

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
nearest-neighbour.

Segmentation: per-pixel MuJoCo body ids (int32; -1 = no geometry), the body of the geom seen at that
pixel. `Observation.privileged["segmentation_names"]` maps every body id to the LIBERO object or fixture
that owns it (e.g. "akita_black_bowl_1", "wooden_cabinet_1"), else to the MuJoCo body name
("robot0_link7", "gripper0_leftfinger", "world", ...).

Privileged state (`PolicyNeeds.privileged`, for scripted policies; see `privileged_state`): robot name,
end-effector pose and gripper joints, every object's and fixture's pose and bounding boxes of its
collision geometry (overall, along its own axes, and per collision geom), every articulated joint of a
fixture (type, position, world axis, the boxes of the parts it moves, LIBERO's open/close/turn-on
thresholds), the BDDL region sites' poses, sizes and joints, and the goal as parsed from the BDDL file
(lower-case tuples such as ("on", "akita_black_bowl_1", "plate_1")).

Asset folder: the suite's `assets=` argument, else $LAMP_BENCH_LIBERO_ASSETS, else the `assets` folder
inside the installed `libero` package. lamp-bench writes LIBERO's config.yaml into its own folder and
points LIBERO_CONFIG_PATH there before importing `libero` (which otherwise prompts on stdin); BDDL and
init-state files come from the installed package. Init states are LIBERO's `*.pruned_init` pickles,
loaded with `torch.load(weights_only=True)` and a four-entry allow-list, never with libero's own loader.

Extension points (LIBERO-Plus builds on this module without editing it):
  * `LiberoTaskSpec` -- any BDDL file + init-state array (or None: LIBERO's placement sampler draws the
    layout from the episode seed) + instruction; `build_key` decides when the simulator must be rebuilt
    (default: the BDDL path). A suite subclass overrides `LiberoSuite.task_spec`; `load_init_states`
    reads LIBERO-format init files safely.
  * `LiberoSuite.env_class` -- the `LiberoEnv` subclass `make_env` builds.
  * `LiberoEnv.env_kwargs(spec)` -- keyword arguments for LIBERO's `ControlEnv` (scene XML, camera
    size, ...); override and extend.
  * `LiberoEnv.on_reset(episode, spec)` -- runs after the init state is set and before the settle
    steps, on every episode (LIBERO hard-resets, i.e. reloads the model, on every reset, so model edits
    belong here): camera pose/FOV (`sim.model.cam_pos/cam_quat/cam_fovy`), lights, textures, robot
    initial joints. Intrinsics and extrinsics are read from the model at every observation, so they
    follow such edits.
  * `LiberoEnv.postprocess(observation)` -- last change to every observation (image noise, ...).
  * `LiberoEnv.sim_env` -- the underlying robosuite environment (`.sim`, `.robots`, `.objects_dict`, ...).
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lamp_bench.harness import config
from lamp_bench.harness.policy import CAMERA_ROLES, Observation, PolicyNeeds, Task
from lamp_bench.harness.provenance import hash_tree_listing, package_versions
from lamp_bench.harness.registry import register_suite
from lamp_bench.harness.suite import Episode, StepResult, Suite, SuiteEnv
from lamp_bench.suites.images import resize_nearest, resize_rgb
from lamp_bench.suites.render_savings import (RENDER_MODES, EpisodeRendering, RenderProof, RenderSetup,
                                              fast_render_xml, proof_key)
from lamp_bench.suites.render_resets import ResetProof, reset_key, reset_stack

SUITE_NAMES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
CAMERAS = {"third_person": "agentview", "wrist": "robot0_eye_in_hand"}
NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)
STAND_INS_FILE = "STAND_INS.txt"


@dataclass(frozen=True)
class LiberoProtocol:
    """OpenVLA's LIBERO evaluation protocol (experiments/robot/libero/run_libero_eval.py)."""

    max_steps: int = 220  # policy steps after the settle phase
    settle_steps: int = 10  # no-op steps inside reset: objects drop onto the table
    render_size: int = 256  # rendered square side, before the resize to PolicyNeeds.image_size
    episodes_per_task: int = 50  # one per fixed initial state

    @classmethod
    def for_suite(cls, suite: str, **overrides: Any) -> "LiberoProtocol":
        return cls(max_steps=MAX_STEPS.get(suite, cls.max_steps), **overrides)


@dataclass(frozen=True, eq=False)
class LiberoTaskSpec:
    """Everything an environment needs to run one task, independent of where the task came from."""

    bddl_file: Path
    init_states: np.ndarray | None  # (N, state size) float64 MuJoCo states; None: LIBERO samples the layout
    instruction: str
    build_key: str = ""  # episodes of specs with equal keys share one simulator; default: the BDDL path

    def __post_init__(self) -> None:
        if not self.build_key:
            object.__setattr__(self, "build_key", str(self.bddl_file))


# ---------------------------------------------------------------------------------------------- setup


def libero_package_dir() -> Path:
    """The installed `libero/libero` folder (BDDL files, init states, the package's default assets)."""
    spec = importlib.util.find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        raise config.ConfigError(
            "the `libero` package is not installed: pip install --no-deps libero==0.1.1 "
            "plus the `libero` extra of lamp-bench (see README)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "libero"


def resolve_assets(assets: str | os.PathLike | None) -> Path:
    """The LIBERO asset folder: option, then $LAMP_BENCH_LIBERO_ASSETS, then the package's own folder."""
    path = config.asset_dir(assets, config.LIBERO_ASSETS_ENV, "LIBERO", must_contain="scenes")
    if path is not None:
        return path
    default = libero_package_dir() / "assets"
    if not (default / "scenes").is_dir():
        raise config.ConfigError(
            f"no LIBERO asset folder: the libero package has none at {default}; pass --assets DIR or set "
            f"{config.LIBERO_ASSETS_ENV} to LIBERO's `assets` folder"
        )
    return default


def import_libero(assets: Path | None = None):
    """The `libero.libero` module and LIBERO's ControlEnv class; with `assets`, scene and object files
    resolve from that folder from now on (LIBERO reads a module global, never downloads when it is set)."""
    libero, control_env = _import_libero()
    if assets is not None:
        libero._assets_path_cache = str(assets)
    return libero, control_env


@functools.lru_cache(maxsize=1)
def _import_libero():
    """Import `libero` without its stdin prompt, rendering on the CPU unless the user chose otherwise."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":  # submitit's CPU-only jobs: robosuite's EGL would parse it
        os.environ.setdefault("MUJOCO_EGL_DEVICE_ID", "0")  # as a device list and fail (int(''))
    if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    package = libero_package_dir()
    folder = config.home() / "libero"
    folder.mkdir(parents=True, exist_ok=True)
    import yaml

    paths = {
        "benchmark_root": str(package),
        "bddl_files": str(package / "bddl_files"),
        "init_states": str(package / "init_files"),
        "datasets": str(folder / "datasets"),
        "assets": str(package / "assets"),  # unused for scenes: they go through _assets_path_cache
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(paths))
    os.environ["LIBERO_CONFIG_PATH"] = str(folder)
    _load_robosuite_macros(folder)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        import libero.libero
        from libero.libero.envs.env_wrapper import ControlEnv
    # robosuite prints this when the legacy `gym` package is absent; lamp-bench uses gymnasium and never
    # robosuite's GymWrapper. Anything else printed during the import is passed on.
    passed = [line for line in printed.getvalue().splitlines() if line != GYM_WRAPPER_NOTICE]
    if passed:
        print("\n".join(passed))
    return libero.libero, ControlEnv


GYM_WRAPPER_NOTICE = "Warning: make sure gym is installed if you want to use the GymWrapper."


def _load_robosuite_macros(folder: Path) -> None:
    """robosuite warns three lines at import unless `robosuite.macros_private` exists. lamp-bench keeps that
    file beside LIBERO's config (robosuite's defaults, as its setup_macros.py writes them; edit it to
    override) and registers it under robosuite's name, so the installed package is never changed."""
    name = "robosuite.macros_private"
    if name in sys.modules:
        return
    path = folder / "robosuite_macros_private.py"
    if not path.is_file():
        package = importlib.util.find_spec("robosuite")
        if package is None or package.origin is None:
            return  # robosuite is missing: the import below says so
        path.write_text(Path(package.origin).with_name("macros.py").read_text())
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module


def load_init_states(path: Path) -> np.ndarray:
    """A LIBERO `*.pruned_init` file (a pickled float64 array) through torch's weights-only unpickler."""
    import pickle

    import torch

    from numpy._core.multiarray import _reconstruct

    allowed = [(_reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype, np.dtypes.Float64DType]
    if not path.is_file():
        raise config.ConfigError(f"LIBERO init-state file {path} does not exist")
    try:
        with torch.serialization.safe_globals(allowed):
            states = torch.load(path, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message advises weights_only=False; only its reason line is worth passing on
        reason = next((line for line in str(error).splitlines() if "GLOBAL" in line or "Unsupported" in line),
                      "not a pickled array")
        raise config.ConfigError(
            f"refusing to load LIBERO init-state file {path}: a plain float64 array was expected, and the "
            f"weights-only unpickler rejected it ({reason.strip()}); replace the file with LIBERO's original"
        ) from None
    states = np.asarray(states)
    if states.ndim == 1:  # LIBERO-Plus stores one init state per file as a flat array
        states = states[None, :]
    if states.dtype != np.float64 or states.ndim != 2:
        raise config.ConfigError(
            f"LIBERO init-state file {path} holds {states.dtype} {states.shape}, expected (N, state) float64")
    return states


def instruction_from_name(name: str) -> str:
    """OpenVLA's instruction: LIBERO's task name without the scene prefix, underscores as spaces."""
    if name[0].isupper():  # libero_10 / libero_90: "KITCHEN_SCENE3_turn_on_..."
        name = name[name.find("SCENE") + (8 if "SCENE10" in name else 7):]
    return name.replace("_", " ")


# ---------------------------------------------------------------------------------------------- suite


class LiberoSuite(Suite):
    """One standard LIBERO suite; `Task.dataset` is the suite name, which OpenVLA checkpoints know as
    `<suite>_no_noops` (the models map that key themselves)."""

    env_class: type["LiberoEnv"]  # set below, after LiberoEnv is defined

    def __init__(self, name: str, assets: str | os.PathLike | None = None, protocol: LiberoProtocol | None = None,
                 render: str = "exact"):
        self.name = name
        self.assets = resolve_assets(assets)
        self.protocol = protocol or LiberoProtocol.for_suite(name)
        if render not in RENDER_MODES:
            raise config.ConfigError(f"render must be one of {', '.join(RENDER_MODES)} (exact is the default "
                                     f"protocol; fast turns MSAA off and changes pixels); got {render!r}")
        self.render = render  # see suites/render_savings.py
        self.description = f"LIBERO {name} (OpenVLA protocol)"
        self._specs: dict[int, LiberoTaskSpec] = {}

    def task_names(self) -> list[str]:
        _import_libero()
        from libero.libero.benchmark.libero_suite_task_map import libero_task_map

        return list(libero_task_map[self.name])

    @functools.cached_property
    def _tasks(self) -> list[Task]:
        return [
            Task(self.name, i, name, instruction_from_name(name), dataset=self.name, extra={"bddl": f"{name}.bddl"})
            for i, name in enumerate(self.task_names())
        ]

    def tasks(self) -> list[Task]:
        return self._tasks

    def task_spec(self, task_id: int) -> LiberoTaskSpec:
        if task_id not in self._specs:
            task = self.task(task_id)
            package = libero_package_dir()
            self._specs[task_id] = LiberoTaskSpec(
                bddl_file=package / "bddl_files" / self.name / f"{task.name}.bddl",
                init_states=load_init_states(package / "init_files" / self.name / f"{task.name}.pruned_init"),
                instruction=task.instruction,
            )
        return self._specs[task_id]

    def max_steps(self, task: Task) -> int:
        return self.protocol.max_steps

    def num_init_states(self, task: Task) -> int:
        return len(self.task_spec(task.task_id).init_states)

    def default_episodes_per_task(self) -> int:
        return self.protocol.episodes_per_task

    def make_env(self, needs: PolicyNeeds) -> "LiberoEnv":
        env = self.env_class(self.task_spec, needs, self.protocol, self.assets)
        env.render_setup = self.render_setup()
        env.soft_reset_allowed = self.soft_reset_allowed
        return env

    @functools.cached_property
    def _render_proof(self) -> RenderProof:
        return RenderProof.load()

    @functools.cached_property
    def _assets_identity(self) -> str:
        return hash_tree_listing(str(self.assets))

    def render_setup(self) -> RenderSetup:
        """Render mode and the exact savings' proof, keyed by (suite, task name, camera, render size)."""
        size = self.protocol.render_size
        return RenderSetup(self.render, self._render_proof, self._assets_identity,
                           lambda task_id, camera: proof_key(self.name, self.task(task_id).name, camera, size))

    @functools.cached_property
    def _reset_proof(self) -> tuple[ResetProof, dict[str, Any]]:
        return ResetProof.load(), reset_stack(self._assets_identity)

    def soft_reset_allowed(self, task_id: int) -> bool:
        """Whether suites/reset_proof.json proved soft resets identical for this task (suites/render_resets.py)."""
        proof, stack = self._reset_proof
        return proof.allows_soft(reset_key(self.name, self.task(task_id).name), stack)

    def provenance(self) -> dict[str, Any]:
        stand_ins = (self.assets / STAND_INS_FILE).is_file()
        versions = package_versions()
        return {
            "suite": self.name,
            "assets": str(self.assets),
            "assets_identity": hash_tree_listing(str(self.assets)),
            "assets_stand_ins": stand_ins,
            "assets_note": (
                f"asset pack has stand-in meshes/textures ({STAND_INS_FILE}): "
                "not comparable with published LIBERO numbers"
                if stand_ins else "original LIBERO assets"
            ),
            "versions": {k: versions.get(k) for k in ("libero", "robosuite", "mujoco", "bddl")},
            "render_backend": os.environ.get("MUJOCO_GL"),
            "render": self.render,
            "render_proof": self._render_proof.identity,
            "protocol": asdict(self.protocol),
        }

    def protocol_fields(self) -> dict[str, Any]:
        """The episode conditions records are keyed by (see Suite.protocol_fields)."""
        # The render mode defines the pixels; the proof behind the exact mode's savings does not (the savings
        # are bit-identical where used, and the guard checks each episode), so it is provenance, not protocol:
        # a new proof must not split bit-identical episodes into two protocols.
        return {"suite": self.name, **asdict(self.protocol), "cameras": CAMERAS,
                "assets_identity": hash_tree_listing(str(self.assets)), "render": self.render}


# ---------------------------------------------------------------------------------------------- env


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
        self._bodies: _BodyIndex | None = None
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
        """Change the freshly reset simulator before the settle steps (see the module docstring)."""

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
        self._bodies = _BodyIndex(self.sim_env)  # a hard reset reloads the model
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


LiberoSuite.env_class = LiberoEnv


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


# ---------------------------------------------------------------------------------------------- state


class _BodyIndex:
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


def privileged_state(env, bodies: _BodyIndex, raw: dict[str, np.ndarray]) -> dict[str, Any]:
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


for _name in SUITE_NAMES:
    register_suite(_name)(functools.partial(LiberoSuite, _name))
