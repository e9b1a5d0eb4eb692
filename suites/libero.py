"""The five standard LIBERO suites (libero_spatial, libero_object, libero_goal, libero_10, libero_90) on the
real `libero` 0.1.1 package (robosuite 1.4, MuJoCo 3, CPU rendering), under OpenVLA's evaluation protocol.

Protocol (`LiberoProtocol`): episode i of a task starts from the task's fixed initial state i (50 per
task); 10 settle steps with the no-op action [0,0,0,0,0,0,-1] run inside `reset`; then at most
220/280/300/520/400 policy steps (spatial/object/goal/10/90); success is the task's BDDL goal
(`env.check_success()`, LIBERO's `done`). Images are rendered 256x256, rotated 180 degrees as OpenVLA does
and resized (Lanczos) to `PolicyNeeds.image_size`.

Where things are: the protocol constants, `LiberoProtocol` and `LiberoTaskSpec` in suites/libero_protocol.py;
the environment (reset/step/observation, rendering, image geometry) in suites/libero_env.py; segmentation
and the privileged state (`PolicyNeeds.privileged`, for scripted policies) in suites/libero_state.py; the
installed package (asset folder, importing `libero`, init-state files) in suites/libero_stack.py. The
names other modules use are re-exported here.

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

import functools
import os
from dataclasses import asdict
from typing import Any

from lamp_bench.harness import config
from lamp_bench.harness.policy import PolicyNeeds, Task
from lamp_bench.harness.provenance import hash_tree_listing, package_versions
from lamp_bench.harness.registry import register_suite
from lamp_bench.harness.suite import Suite
from lamp_bench.suites.libero_env import LiberoEnv, camera_to_world, mirrored_intrinsics
from lamp_bench.suites.libero_protocol import (CAMERAS, MAX_STEPS, NOOP_ACTION, SUITE_NAMES, LiberoProtocol,
                                               LiberoTaskSpec)
from lamp_bench.suites.libero_stack import (_import_libero, import_libero, libero_package_dir, load_init_states,
                                            resolve_assets)
from lamp_bench.suites.libero_state import privileged_state
from lamp_bench.suites.render_savings import RENDER_MODES, RenderProof, RenderSetup, proof_key
from lamp_bench.suites.render_resets import ResetProof, reset_key, reset_stack

__all__ = [  # re-exported: other modules import these from here
    "CAMERAS", "MAX_STEPS", "NOOP_ACTION", "SUITE_NAMES", "STAND_INS_FILE", "LiberoEnv", "LiberoProtocol",
    "LiberoSuite", "LiberoTaskSpec", "camera_to_world", "import_libero", "instruction_from_name",
    "libero_package_dir", "load_init_states", "mirrored_intrinsics", "privileged_state", "resolve_assets",
]

STAND_INS_FILE = "STAND_INS.txt"


def instruction_from_name(name: str) -> str:
    """OpenVLA's instruction: LIBERO's task name without the scene prefix, underscores as spaces."""
    if name[0].isupper():  # libero_10 / libero_90: "KITCHEN_SCENE3_turn_on_..."
        name = name[name.find("SCENE") + (8 if "SCENE10" in name else 7):]
    return name.replace("_", " ")


class LiberoSuite(Suite):
    """One standard LIBERO suite; `Task.dataset` is the suite name, which OpenVLA checkpoints know as
    `<suite>_no_noops` (the models map that key themselves)."""

    env_class: type[LiberoEnv] = LiberoEnv  # the environment make_env builds

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


for _name in SUITE_NAMES:
    register_suite(_name)(functools.partial(LiberoSuite, _name))
