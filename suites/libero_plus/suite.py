"""The LIBERO-Plus suite (tasks from the catalog, one of two backends) and its environment, which applies each
task's perturbation after every reset and corrupts the images of Sensor Noise tasks."""
from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lamp_bench.harness import config
from lamp_bench.harness.policy import Observation, Task
from lamp_bench.harness.provenance import hash_tree_listing
from lamp_bench.harness.registry import register_suite
from lamp_bench.harness.suite import Episode
from lamp_bench.suites.libero import (
    MAX_STEPS,
    LiberoEnv,
    LiberoProtocol,
    LiberoSuite,
    LiberoTaskSpec,
    instruction_from_name,
    libero_package_dir,
    load_init_states,
)
from lamp_bench.suites.libero_plus.catalog import (
    BACKENDS,
    CATEGORIES,
    CLASSIFICATION,
    SOURCE_SUITES,
    SUITE,
    PlusEntry,
    load_classification,
    official_backend_available,
    resolve_plus_assets,
    select,
)
from lamp_bench.suites.libero_plus.corruptions import corrupt
from lamp_bench.suites.libero_plus.layout import (
    Layout,
    choose_distractors,
    distractor_names,
    restore_state_with_extras,
    write_distractor_bddl,
)
from lamp_bench.suites.libero_plus.scene_edits import change_lights, move_camera, offset_robot_joints, retexture

# ---------------------------------------------------------------------------------------------- suite


@dataclass(frozen=True, eq=False)
class PlusTaskSpec(LiberoTaskSpec):
    entry: PlusEntry | None = None
    backend: str = "lamp-bench"
    distractors: tuple[str, ...] = ()  # categories of the distractors the BDDL adds (lamp-bench backend)
    official_bddl: str = ""  # the name-encoded path LIBERO-Plus's ControlEnv parses (official backend)


class LiberoPlusSuite(LiberoSuite):
    """LIBERO-Plus over the four LIBERO suites; `Task.dataset` is the source suite (its action statistics)."""

    def __init__(self, assets: str | os.PathLike | None = None, plus_assets: str | os.PathLike | None = None,
                 per_category: int | str | None = 5, suites: Sequence[str] | str | None = None,
                 categories: Sequence[str] | str | None = None, backend: str = "auto",
                 protocol: LiberoProtocol | None = None, render: str = "exact"):
        super().__init__(SUITE, assets, protocol or LiberoProtocol(episodes_per_task=1), render=render)
        self.description = "LIBERO-Plus: 10,030 OOD-perturbed LIBERO tasks in 7 categories"
        self.plus_assets = resolve_plus_assets(plus_assets)
        if backend == "auto":
            backend = "official" if official_backend_available() else "lamp-bench"
        if backend not in BACKENDS:
            raise ValueError(f"unknown LIBERO-Plus backend {backend!r}; use 'auto', 'official' or 'lamp-bench'")
        if backend == "official" and not official_backend_available():
            raise config.ConfigError("backend='official' needs the LIBERO-Plus package installed in place of "
                                     "`libero` (pip install -e LIBERO-plus) with its asset release")
        self.backend = backend
        self.suites = _names(suites, SOURCE_SUITES, "source suite")
        self.categories = _names(categories, CATEGORIES, "category")
        if per_category in ("all", None):
            self.per_category = None
        elif isinstance(per_category, (int, str)) and str(per_category).isdigit() and int(per_category) > 0:
            self.per_category = int(per_category)
        else:
            raise ValueError(f"per_category must be a positive integer or 'all'; got {per_category!r}")
        self.entries = load_classification(self.plus_assets / CLASSIFICATION)

    # -- tasks --------------------------------------------------------------------------------------

    @functools.cached_property
    def _tasks(self) -> list[Task]:
        return [self._task(e) for e in select(self.entries, self.per_category, self.suites, self.categories)]

    @functools.cached_property
    def _selected(self) -> dict[int, Task]:
        return {t.task_id: t for t in self._tasks}

    def task(self, task_id: int) -> Task:
        """Any of the 10,030 tasks by its stable id, selected or not."""
        if not 0 <= task_id < len(self.entries):
            raise ValueError(f"{SUITE} has tasks 0..{len(self.entries) - 1}; got task id {task_id}")
        return self._selected.get(task_id) or self._task(self.entries[task_id])

    def _task(self, e: PlusEntry) -> Task:
        extra = {"category": e.category, "difficulty_level": e.level, "backend": self.backend,
                 "source_suite": e.source_suite, "official_id": e.official_id, "base_task": e.base, **e.params}
        return Task(SUITE, e.task_id, e.name, self._instruction(e), dataset=e.source_suite, extra=extra)

    def _instruction(self, e: PlusEntry) -> str:
        if e.category == "Language Instructions":
            return _bddl_language(self._plus_bddl(e, f"{e.base}_language_{e.params['language_variant']}"))
        return instruction_from_name(e.base)

    def _plus_bddl(self, e: PlusEntry, stem: str) -> Path:
        for root in (self.plus_assets / "bddl_files", libero_package_dir() / "bddl_files"):
            path = root / e.source_suite / f"{stem}.bddl"
            if path.is_file():
                return path
        raise config.ConfigError(f"LIBERO-Plus BDDL file {stem}.bddl not found under {self.plus_assets}/bddl_files/"
                                 f"{e.source_suite}: the LIBERO-Plus folder lacks its bddl_files")

    def max_steps(self, task: Task) -> int:
        return MAX_STEPS[task.extra["source_suite"]]

    def task_spec(self, task_id: int) -> PlusTaskSpec:
        if task_id not in self._specs:
            e = self.entries[task_id]
            self._specs[task_id] = (self._official_spec if self.backend == "official" else self._own_spec)(e)
        return self._specs[task_id]

    def _base_states(self, e: PlusEntry) -> np.ndarray:
        return load_init_states(libero_package_dir() / "init_files" / e.source_suite / f"{e.base}.pruned_init")

    def _own_spec(self, e: PlusEntry) -> PlusTaskSpec:
        base_bddl = libero_package_dir() / "bddl_files" / e.source_suite / f"{e.base}.bddl"
        instruction = self._instruction(e)
        if e.category == "Language Instructions":
            bddl = self._plus_bddl(e, f"{e.base}_language_{e.params['language_variant']}")
            return PlusTaskSpec(bddl, self._base_states(e), instruction, entry=e)
        if e.category == "Objects Layout" and e.params["distractors"]:
            kinds = choose_distractors(base_bddl.read_text(), e.params["distractors"], e.params["layout_variant"])
            bddl = write_distractor_bddl(base_bddl, kinds, config.home() / "libero_plus" / "bddl" / e.source_suite)
            states = self._base_states(e)
            padded = np.concatenate([states, np.zeros((len(states), 13 * len(kinds)))], axis=1)  # 7 qpos + 6 qvel each
            return PlusTaskSpec(bddl, padded, instruction, entry=e, distractors=kinds)
        return PlusTaskSpec(base_bddl, self._base_states(e), instruction, entry=e)

    def _official_spec(self, e: PlusEntry) -> PlusTaskSpec:
        """LIBERO-Plus's own files and rules (libero/libero/benchmark/__init__.py of LIBERO-Plus)."""
        package = libero_package_dir()
        bddl_dir = package / "bddl_files" / e.source_suite
        init_dir = package / "init_files"
        if e.category == "Objects Layout":
            states = load_init_states(init_dir / "libero_newobj" / e.source_suite / f"{e.name}.pruned_init")
            bddl = bddl_dir / f"{e.name}.bddl"
        else:
            states = load_init_states(init_dir / e.source_suite / f"{e.base}.pruned_init")
            stem = e.name.split("_view_")[0]  # camera/robot/noise variants are parsed from the name by ControlEnv
            bddl = bddl_dir / f"{stem}.bddl" if (bddl_dir / f"{stem}.bddl").is_file() else bddl_dir / f"{e.base}.bddl"
        return PlusTaskSpec(bddl, states, self._instruction(e), build_key=e.name, entry=e, backend="official",
                            official_bddl=str(bddl_dir / f"{e.name}.bddl"))

    def make_env(self, needs) -> LiberoPlusEnv:
        env = LiberoPlusEnv(self.task_spec, needs, self.protocol, self.assets, self.assets / "textures")
        env.render_setup = self.render_setup()  # proven exact render savings (suites/render_savings.py)
        return env

    def provenance(self) -> dict[str, Any]:
        prov = super().provenance()
        official = self.backend == "official"
        prov.update({
            "suite": SUITE,
            "backend": self.backend,
            "plus_assets": str(self.plus_assets),
            "plus_assets_identity": hash_tree_listing(str(self.plus_assets)),
            "comparable": official and not prov["assets_stand_ins"],
            "plus_note": ("LIBERO-Plus package, tasks run by name" if official else
                          "lamp-bench's re-implementation of LIBERO-Plus's perturbations over standard LIBERO: "
                          "not comparable with published LIBERO-Plus numbers"),
            "max_steps_by_source_suite": {s: MAX_STEPS[s] for s in SOURCE_SUITES},
            "selection": {"per_category": self.per_category, "suites": list(self.suites),
                          "categories": list(self.categories), "tasks": len(self._tasks)},
        })
        return prov

    def protocol_fields(self) -> dict[str, Any]:
        """LIBERO's conditions plus the backend, the LIBERO-Plus task files, the perturbation code (the
        source of this package, hashed) and the task selection (task ids index it)."""
        code = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(Path(__file__).parent.glob("*.py"))))
        return {**super().protocol_fields(), "backend": self.backend,
                "plus_assets_identity": hash_tree_listing(str(self.plus_assets)),
                "perturbation_code": code.hexdigest()[:16] if self.backend != "official" else None,
                "max_steps_by_source_suite": {s: MAX_STEPS[s] for s in SOURCE_SUITES},
                "selection": {"per_category": self.per_category, "suites": list(self.suites),
                              "categories": list(self.categories)}}


def _names(value: Sequence[str] | str | None, known: Sequence[str], what: str) -> tuple[str, ...]:
    if value is None:
        return tuple(known)
    names = tuple(v.strip() for v in value.split(",")) if isinstance(value, str) else tuple(value)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"unknown LIBERO-Plus {what} {unknown}; known: {', '.join(known)}")
    return names


def _bddl_language(path: Path) -> str:
    match = re.search(r"\(:language\s+([^)]*)\)", path.read_text())
    if match is None:
        raise ValueError(f"BDDL file {path} has no (:language ...)")
    return match.group(1).strip()


# ---------------------------------------------------------------------------------------------- env


class LiberoPlusEnv(LiberoEnv):
    """LIBERO with the task's perturbation applied after every reset (the model is reloaded each time)."""

    def __init__(self, task_spec, needs, protocol, assets: Path, textures: Path):
        super().__init__(task_spec, needs, protocol, assets)
        self.textures = textures
        self._info: dict[str, Any] = {}
        self._noise_rng: np.random.Generator | None = None
        self._noise: tuple[str, int] | None = None

    def env_kwargs(self, spec: PlusTaskSpec) -> dict[str, Any]:
        kwargs = super().env_kwargs(spec)
        if spec.backend == "official":
            kwargs["bddl_file_name"] = spec.official_bddl
        return kwargs

    def reset(self, episode: Episode) -> Observation:
        spec = self.task_spec(episode.task_id)
        p = spec.entry.params
        self._info = {}
        self._noise = (p["noise_kind"], p["noise_severity"]) if "noise_kind" in p else None
        self._noise_rng = np.random.default_rng([episode.seed, episode.task_id, episode.init_index])
        return super().reset(episode)

    def on_reset(self, episode: Episode, spec: PlusTaskSpec) -> None:
        if spec.backend == "official":
            return
        env, p = self.sim_env, spec.entry.params
        category = spec.entry.category
        distractors = distractor_names(spec.distractors)
        if distractors:
            restore_state_with_extras(env, spec.init_states[episode.init_index][: -13 * len(distractors)], distractors)
        if category == "Camera Viewpoints":
            move_camera(env, "agentview", p["camera_orbit_deg"], p["camera_elevation_deg"],
                        p["camera_distance_scale"], p["camera_yaw_deg"], p["camera_pitch_deg"])
        elif category == "Robot Initial States":
            self._info["robot_init_offset_rad"] = offset_robot_joints(env, p["robot_init_variant"],
                                                                      p["robot_init_offset_rad"])
        elif category == "Light Conditions":
            change_lights(env, p["light_variant"], p["light_level"])
        elif category == "Background Textures":
            self._info["textures"] = retexture(env, self.textures, p["texture_variant"], p["texture_surfaces"])
        elif category == "Objects Layout":
            layout = Layout(env, self._bodies, pending=distractors)
            if p["displacement_m"]:
                self._info["displacement_applied_m"] = layout.displace(p["displacement_m"], p["layout_variant"])
            if distractors:
                self._info["distractors_placed"] = layout.place_distractors(distractors, p["layout_variant"])
        env.sim.forward()

    def postprocess(self, observation: Observation) -> Observation:
        if self._noise is not None and "third_person" in observation.images:
            observation.images["third_person"] = corrupt(observation.images["third_person"], *self._noise,
                                                         self._noise_rng)
        return observation

    def episode_info(self) -> dict[str, Any]:
        return {**super().episode_info(), **self._info}


register_suite(SUITE)(LiberoPlusSuite)
