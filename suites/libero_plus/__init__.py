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

The package, one concept a module: `catalog` (task list, names, selection), `scene_edits` (camera, robot, light,
textures), `layout` (object displacement, distractors), `corruptions` (sensor noise), `suite` (the Suite and its
environment, registered as "libero_plus").
"""
from lamp_bench.suites.libero_plus.catalog import (
    BACKENDS,
    CATEGORIES,
    CLASSIFICATION,
    NAME,
    SOURCE_SUITES,
    SUITE,
    PlusEntry,
    load_classification,
    official_backend_available,
    parse_name,
    resolve_plus_assets,
    select,
)
from lamp_bench.suites.libero_plus.corruptions import NOISE_KINDS, corrupt
from lamp_bench.suites.libero_plus.layout import (
    DISTRACTOR_BANK,
    Layout,
    choose_distractors,
    distractor_names,
    restore_state_with_extras,
    write_distractor_bddl,
)
from lamp_bench.suites.libero_plus.scene_edits import (
    change_lights,
    first_hit,
    move_camera,
    offset_robot_joints,
    retexture,
)
from lamp_bench.suites.libero_plus.suite import LiberoPlusEnv, LiberoPlusSuite, PlusTaskSpec

__all__ = [
    "BACKENDS", "CATEGORIES", "CLASSIFICATION", "DISTRACTOR_BANK", "NAME", "NOISE_KINDS", "SOURCE_SUITES", "SUITE",
    "Layout", "LiberoPlusEnv", "LiberoPlusSuite", "PlusEntry", "PlusTaskSpec", "change_lights", "choose_distractors",
    "corrupt", "distractor_names", "first_hit", "load_classification", "move_camera", "offset_robot_joints",
    "official_backend_available", "parse_name", "resolve_plus_assets", "restore_state_with_extras", "retexture",
    "select", "write_distractor_bddl",
]
