"""The LIBERO-Plus task catalog: LIBERO-Plus's `task_classification.json`, the perturbation each task name
encodes (`parse_name`), the stratified subset a run selects (`select`), and where the files live."""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamp_bench.harness import config
from lamp_bench.results.paper import LIBERO_PLUS_CATEGORIES
from lamp_bench.suites.libero import libero_package_dir
from lamp_bench.suites.libero_plus.corruptions import NOISE_KINDS

SUITE = "libero_plus"
SOURCE_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
CATEGORIES = LIBERO_PLUS_CATEGORIES  # defined once, with the paper's tables that report them
BACKENDS = ("official", "lamp-bench")
CLASSIFICATION = "task_classification.json"
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
