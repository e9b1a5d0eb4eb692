"""LIBERO-Plus: 10,030 LIBERO tasks under one of seven perturbations, 1 trial each, on top of suites/libero.py.

Tasks come from LIBERO-Plus's `task_classification.json` (suite -> [{id, name, category, difficulty_level}],
in the suite kwarg `plus_assets=` folder, else $LAMP_BENCH_LIBERO_PLUS_ASSETS, else the LIBERO-Plus package's
own copy). `Task.task_id` is the task's position in that list over libero_spatial, libero_object,
libero_goal, libero_10 (0..10029), stable whatever subset a run selects. The perturbation is encoded in the
name (`parse_name`): `_view_<h>_<v>_<scale>_<rot>_<tilt>_initstate_<n>` (camera / robot initial state),
`_noise_<n>`, `_language_<n>`, `_light_<n>`, `_table_<n>` / `_tb_<n>`, `_add_<n>`, `_level<k>_sample<n>`
(libero_goal also has `_moved` layouts). `Task.extra` carries category, difficulty_level, backend,
source_suite, official_id, base_task and the perturbation's parameters (flat keys), which the runner copies
into every record's `info`; reports group by them.

Subset (`per_category`): the default 5 tasks per category, chosen deterministically and stratified by
difficulty level (round robin over levels 1-5, rotating over the source suites), fit a CPU;
`per_category=None` (or "all") is the full list for a cluster. `suites=` / `categories=` narrow it.
Protocol: LIBERO's (OpenVLA's settle steps and per-suite step limits of the task's source suite), init
state 0 of the base task, 1 trial per task (more episodes use init states 1.., a lamp-bench extension).

Two backends behind the same tasks:
  * "official": the LIBERO-Plus package (a drop-in replacement of `libero`, with its asset release) is
    installed; tasks run by name through its own ControlEnv, which parses the name (camera, robot variant)
    or loads the task's own BDDL (light, textures, new objects); init states follow its benchmark's rules.
    Detected from the installed package (`official_backend_available`); it cannot be installed here, so
    this path is small and untested in CI. Its sensor noise is applied to images LIBERO-Plus renders itself,
    which lamp-bench does not use, so lamp-bench applies its own corruption (below) in both backends.
  * "lamp-bench" (default here): lamp-bench's own deterministic re-implementation over standard LIBERO 0.1.1
    and the LIBERO asset pack, parameterised by the name and the difficulty level, success predicate always
    the base task's BDDL goal. Not comparable with official LIBERO-Plus numbers (`provenance()` says so).
      Camera Viewpoints  the agentview camera orbits about the point it looks at on the table by <h> degrees
                         about z and <v> degrees of elevation, its distance scales by <scale>/100, and it
                         turns in place by <rot> (yaw) and <tilt> (pitch) degrees (LIBERO-Plus's rotation
                         order); the name encodes no field-of-view change, so fovy is kept.
      Robot Initial      arm joints offset from the init state by a unit direction seeded by <n> times
      States             0.1 rad * ceil(<n>/100) (LIBERO-Plus's five 0.1-0.5 rad bands), within joint limits.
      Language           the LIBERO-Plus `_language_<n>` BDDL (a rewritten instruction; loads with standard
                         LIBERO), base init states.
      Light Conditions   every scene light and the headlight: intensity x exp(+-0.25 * level), colour tinted
                         towards a hue seeded by <n> (weight 0.1 * level), direction tilted 8 * level degrees,
                         shadows on with probability level / 5 (level 3 where LIBERO-Plus gives none).
      Background         `_table_<n>`: the support surface (table, or floor in floor scenes) gets texture
      Textures           <n> of LIBERO's own texture set (the asset pack's `textures/`); `_tb_<n>`: table,
                         floor and walls.
      Sensor Noise       `_noise_<n>`: LIBERO-Plus's five corruptions of the third-person image (motion
                         blur, Gaussian blur, zoom blur, fog, glass blur for n in 1-10, ..., 41-50) at
                         severity n mod 10 (1-10), re-implemented with numpy/scipy, random per frame but
                         seeded by the episode.
      Objects Layout     `_level<k>_sample<n>` (and `_moved`): the objects of interest that rest on the
                         support surface move 2 cm * k (difficulty level for `_moved`) in a direction seeded
                         by <n>, without overlapping anything; `_add_<n>`: ceil(n/6) distractors from
                         LIBERO's own objects (none of a category already in the scene) on free spots.
                         `episode_info()` reports the displacement actually applied and the distractors.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
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

SUITE = "libero_plus"
SOURCE_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
CATEGORIES = ("Objects Layout", "Camera Viewpoints", "Robot Initial States", "Language Instructions",
              "Light Conditions", "Background Textures", "Sensor Noise")
BACKENDS = ("official", "lamp-bench")
CLASSIFICATION = "task_classification.json"
NOISE_KINDS = ("motion_blur", "gaussian_blur", "zoom_blur", "fog", "glass_blur")  # bands of 10 noise indices
# LIBERO objects (in the asset pack) used as distractors: small, stable, unambiguous.
DISTRACTOR_BANK = ("alphabet_soup", "bbq_sauce", "butter", "chocolate_pudding", "cream_cheese", "ketchup", "milk",
                   "orange_juice", "porcelain_mug", "red_coffee_mug", "salad_dressing", "tomato_sauce",
                   "white_yellow_mug")
NAME = re.compile(
    r"^(?P<base>.+?)"
    r"(?:_language_(?P<language>\d+))?"
    r"(?:_view_(?P<view>\d+_\d+_\d+_\d+_\d+)_initstate_(?P<initstate>\d+))?"
    r"(?:_noise_(?P<noise>\d+))?"
    r"(?:_light_(?P<light>\d+))?"
    r"(?:_(?P<background>table|tb)_(?P<texture>\d+))?"
    r"(?P<moved>_moved)?"
    r"(?:_add_(?P<add>\d+))?"
    r"(?:_level(?P<layout_level>\d+)_sample(?P<sample>\d+))?$"
)


# ---------------------------------------------------------------------------------------------- names


def _signed_degrees(value: int) -> float:
    """LIBERO-Plus writes angles as 0..359; 358 means -2 degrees."""
    return float((value + 180) % 360 - 180)


def parse_name(name: str, category: str, level: int | None) -> tuple[str, dict[str, Any]]:
    """(base task name, perturbation parameters) of a LIBERO-Plus task name. Only the parameters of the task's
    own category are returned (every name carries a nominal `_view_0_0_100_0_0_initstate_0`, say)."""
    match = NAME.match(name)
    if match is None:
        raise ValueError(f"not a LIBERO-Plus task name: {name!r}")
    g = match.groupdict()
    if category == "Camera Viewpoints":
        h, v, scale, rot, tilt = (int(x) for x in g["view"].split("_"))
        params = {"camera_orbit_deg": _signed_degrees(h), "camera_elevation_deg": _signed_degrees(v),
                  "camera_distance_scale": scale / 100, "camera_yaw_deg": _signed_degrees(rot),
                  "camera_pitch_deg": _signed_degrees(tilt)}
    elif category == "Robot Initial States":
        n = int(g["initstate"])
        params = {"robot_init_variant": n, "robot_init_offset_rad": round(0.1 * math.ceil(n / 100), 3)}
    elif category == "Sensor Noise":
        n = int(g["noise"])
        params = {"noise_index": n, "noise_kind": NOISE_KINDS[(n - 1) // 10], "noise_severity": (n - 1) % 10 + 1}
    elif category == "Language Instructions":
        params = {"language_variant": int(g["language"])}
    elif category == "Light Conditions":  # 121 libero_goal light tasks have no level: the middle one
        params = {"light_variant": int(g["light"]), "light_level": level or 3}
    elif category == "Background Textures":
        params = {"texture_variant": int(g["texture"]),
                  "texture_surfaces": "support" if g["background"] == "table" else "support+floor+walls"}
    elif category == "Objects Layout":
        if g["add"]:
            params = {"distractors": math.ceil(int(g["add"]) / 6), "layout_variant": int(g["add"]),
                      "displacement_m": 0.0}
        else:
            k = int(g["layout_level"]) if g["layout_level"] else level
            params = {"distractors": 0, "layout_variant": int(g["sample"] or 0),
                      "displacement_m": round(0.02 * k, 3)}
        params["layout_moved"] = bool(g["moved"])
        if g["moved"] and not params["displacement_m"]:
            params["displacement_m"] = round(0.02 * (level or 3), 3)
    else:
        raise ValueError(f"unknown LIBERO-Plus category {category!r}; categories: {', '.join(CATEGORIES)}")
    return g["base"], params


@dataclass(frozen=True)
class PlusEntry:
    """One row of task_classification.json, with its base task and parameters."""

    task_id: int
    source_suite: str
    official_id: int
    name: str
    category: str
    level: int | None  # LIBERO-Plus's difficulty level 1-5 (None for 121 libero_goal light tasks)
    base: str
    params: dict[str, Any] = field(compare=False, hash=False)


def load_classification(path: Path) -> list[PlusEntry]:
    data = json.loads(path.read_text())
    missing = [s for s in SOURCE_SUITES if s not in data]
    if missing:
        raise config.ConfigError(f"{path} lacks suites {missing}: is it LIBERO-Plus's {CLASSIFICATION}?")
    entries = []
    for suite in SOURCE_SUITES:
        for row in data[suite]:
            level = None if row["difficulty_level"] is None else int(row["difficulty_level"])
            base, params = parse_name(row["name"], row["category"], level)
            entries.append(PlusEntry(len(entries), suite, int(row["id"]), row["name"], row["category"], level,
                                     base, params))
    return entries


def select(entries: Sequence[PlusEntry], per_category: int | None, suites: Sequence[str],
           categories: Sequence[str]) -> list[PlusEntry]:
    """`per_category` tasks per category, round robin over difficulty levels and source suites, each pick
    spread over its pool by a golden-ratio sequence (deterministic); None: every task."""
    pool = [e for e in entries if e.source_suite in suites and e.category in categories]
    if per_category is None:
        return pool
    chosen = []
    for category in categories:
        by_level: dict[int | None, dict[str, list[PlusEntry]]] = {}
        for e in pool:
            if e.category == category:
                by_level.setdefault(e.level, {}).setdefault(e.source_suite, []).append(e)
        levels = sorted(by_level, key=lambda level: (level is None, level))
        taken: set[int] = set()
        for j in range(min(per_category, sum(len(x) for lv in by_level.values() for x in lv.values()))):
            level = levels[j % len(levels)]
            wanted = suites[j % len(suites)]
            candidates = by_level[level].get(wanted) or [e for x in by_level[level].values() for e in x]
            candidates = [e for e in candidates if e.task_id not in taken] or \
                [e for lv in by_level.values() for x in lv.values() for e in x if e.task_id not in taken]
            pick = candidates[int(len(candidates) * ((j * 0.6180339887) % 1.0))]
            taken.add(pick.task_id)
            chosen.append(pick)
    return sorted(chosen, key=lambda e: e.task_id)


def official_backend_available() -> bool:
    """Whether the installed `libero` is the LIBERO-Plus package (its ControlEnv parses perturbed names)."""
    try:
        wrapper = libero_package_dir() / "envs" / "env_wrapper.py"
    except config.ConfigError:
        return False
    return wrapper.is_file() and "_initstate_" in wrapper.read_text()


def resolve_plus_assets(plus_assets: str | os.PathLike | None) -> Path:
    path = config.asset_dir(plus_assets, config.LIBERO_PLUS_ASSETS_ENV, "LIBERO-Plus", must_contain=CLASSIFICATION)
    if path is not None:
        return path
    try:
        packaged = libero_package_dir() / "benchmark"
    except config.ConfigError:
        packaged = None
    if packaged is not None and (packaged / CLASSIFICATION).is_file():
        return packaged
    raise config.ConfigError(
        f"no LIBERO-Plus task list: pass plus_assets=DIR or set {config.LIBERO_PLUS_ASSETS_ENV} to a folder holding "
        f"{CLASSIFICATION} (and bddl_files/<suite>/ for the language variants), e.g. LIBERO-Plus's release"
    )


def _bddl_language(path: Path) -> str:
    match = re.search(r"\(:language\s+([^)]*)\)", path.read_text())
    if match is None:
        raise ValueError(f"BDDL file {path} has no (:language ...)")
    return match.group(1).strip()


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
                 protocol: LiberoProtocol | None = None):
        super().__init__(SUITE, assets, protocol or LiberoProtocol(episodes_per_task=1))
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
        return LiberoPlusEnv(self.task_spec, needs, self.protocol, self.assets, self.assets / "textures")

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


def _names(value: Sequence[str] | str | None, known: Sequence[str], what: str) -> tuple[str, ...]:
    if value is None:
        return tuple(known)
    names = tuple(v.strip() for v in value.split(",")) if isinstance(value, str) else tuple(value)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"unknown LIBERO-Plus {what} {unknown}; known: {', '.join(known)}")
    return names


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
        return dict(self._info)


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


# ---------------------------------------------------------------------------------------------- layout


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


# ---------------------------------------------------------------------------------------------- noise


def corrupt(image: np.ndarray, kind: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """LIBERO-Plus's sensor corruptions (ImageNet-C style) at severity 1-10, for an (S, S, 3) uint8 image;
    pixel sizes are LIBERO-Plus's for a 224-pixel image, scaled to S."""
    from scipy import ndimage

    x = image.astype(np.float32) / 255.0
    s = image.shape[0] / 224.0
    i = severity - 1
    if kind == "gaussian_blur":
        out = ndimage.gaussian_filter(x, sigma=(severity * s, severity * s, 0))
    elif kind == "motion_blur":
        sigma = (2, 3, 4, 5, 6, 8, 10, 12, 15, 20)[i] * s
        length = max(3, int(2 * sigma) | 1)
        kernel = np.zeros((length, length), np.float32)
        offsets = np.arange(length) - length // 2
        weights = np.exp(-0.5 * (offsets / max(sigma / 2, 1e-3)) ** 2)
        angle = np.deg2rad(rng.uniform(-45, 45))
        rows = np.clip(np.round(length // 2 + offsets * np.sin(angle)).astype(int), 0, length - 1)
        cols = np.clip(np.round(length // 2 + offsets * np.cos(angle)).astype(int), 0, length - 1)
        np.add.at(kernel, (rows, cols), weights)
        kernel /= kernel.sum()
        out = np.stack([ndimage.convolve(x[..., c], kernel, mode="nearest") for c in range(3)], axis=-1)
    elif kind == "zoom_blur":
        top = (1.11, 1.16, 1.21, 1.26, 1.31, 1.36, 1.41, 1.46, 1.51, 1.56)[i]
        out = x.copy()
        factors = np.linspace(1.0, top, 8)[1:]
        for factor in factors:
            out += _centre_zoom(x, factor)
        out /= len(factors) + 1
    elif kind == "fog":
        strength, decay = ((0.5, 3), (1.0, 2.8), (1.5, 2.5), (2.0, 2.2), (2.5, 2.0), (3.0, 1.8), (3.5, 1.6),
                           (4.0, 1.5), (4.5, 1.4), (5.0, 1.3))[i]
        size = 1 << int(np.ceil(np.log2(max(image.shape[:2]))))
        fog = _plasma(size, decay, rng)[: image.shape[0], : image.shape[1], None]
        top = x.max()
        out = (x + strength * fog) * top / (top + strength)
    elif kind == "glass_blur":
        sigma, delta, iterations = ((0.5, 1, 3), (0.7, 1, 3), (0.9, 2, 3), (1.0, 2, 2), (1.1, 3, 2), (1.3, 3, 2),
                                    (1.5, 4, 2), (1.8, 4, 2), (2.2, 5, 1), (2.5, 5, 1))[i]
        delta = max(1, round(delta * s))
        out = ndimage.gaussian_filter(x, sigma=(sigma * s, sigma * s, 0))
        h, w = out.shape[:2]
        rows, cols = np.mgrid[0:h, 0:w]
        for _ in range(iterations):  # each pixel takes a neighbour's value (a vectorised local shuffle)
            dr, dc = rng.integers(-delta, delta + 1, size=(2, h, w))
            out = out[np.clip(rows + dr, 0, h - 1), np.clip(cols + dc, 0, w - 1)]
        out = ndimage.gaussian_filter(out, sigma=(sigma * s, sigma * s, 0))
    else:
        raise ValueError(f"unknown corruption {kind!r}; kinds: {', '.join(NOISE_KINDS)}")
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def _centre_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    from scipy import ndimage

    h = x.shape[0]
    crop = int(np.ceil(h / factor))
    top = (h - crop) // 2
    zoomed = ndimage.zoom(x[top: top + crop, top: top + crop], (factor, factor, 1), order=1)
    trim = (zoomed.shape[0] - h) // 2
    return zoomed[trim: trim + h, trim: trim + h]


def _plasma(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square height map in [0, 1] (the fog texture of ImageNet-C / LIBERO-Plus), seeded."""
    grid = np.zeros((size, size))
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        corners = grid[0:size:step, 0:size:step]
        square = corners + np.roll(corners, -1, 0)
        square = square + np.roll(square, -1, 1)
        grid[half:size:step, half:size:step] = square / 4 + wibble * rng.uniform(-wibble, wibble, square.shape)
        centres = grid[half:size:step, half:size:step]
        left = centres + np.roll(centres, 1, 0) + corners + np.roll(corners, -1, 1)
        grid[0:size:step, half:size:step] = left / 4 + wibble * rng.uniform(-wibble, wibble, left.shape)
        top = centres + np.roll(centres, 1, 1) + corners + np.roll(corners, -1, 0)
        grid[half:size:step, 0:size:step] = top / 4 + wibble * rng.uniform(-wibble, wibble, top.shape)
        step, wibble = half, wibble / decay
    grid -= grid.min()
    return grid / grid.max()


register_suite(SUITE)(LiberoPlusSuite)
