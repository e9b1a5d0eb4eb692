"""LIBERO-Plus: the task list and its selection, lamp-bench's perturbations on the real LIBERO simulator (each
changes what it should, deterministically, and leaves the task solvable by the oracle), and the grouping of
records by category. Reference and perturbed tasks share one base task, so one environment serves them all."""
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from lamp_bench.harness.config import (
    LIBERO_ASSETS_ENV,
    LIBERO_PLUS_ASSETS_ENV,
    ConfigError,
)
from lamp_bench.harness.policy import PolicyNeeds
from lamp_bench.harness.registry import POLICIES, SUITES, load_builtin_entries
from lamp_bench.harness.runner import run_episodes
from lamp_bench.harness.suite import Episode
from lamp_bench.results.store import EpisodeStore
from lamp_bench.suites.libero_plus import (
    CATEGORIES,
    NOISE_KINDS,
    SOURCE_SUITES,
    choose_distractors,
    corrupt,
    parse_name,
    write_distractor_bddl,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "assets"
ASSETS = Path(os.environ.get(LIBERO_ASSETS_ENV) or SHARED / "libero")
PLUS = Path(os.environ.get(LIBERO_PLUS_ASSETS_ENV) or SHARED / "libero-plus")
pytestmark = pytest.mark.skipif(not (ASSETS / "scenes").is_dir() or not (PLUS / "task_classification.json").is_file(),
                                reason=f"no LIBERO / LIBERO-Plus asset packs at {ASSETS}, {PLUS}")
BASE = "pick_up_the_black_bowl_between_the_plate_and_the_ramekin_and_place_it_on_the_plate"
SIZE = 128


@pytest.fixture(scope="module")
def plus():
    load_builtin_entries()
    return SUITES.build("libero_plus", assets=str(ASSETS), plus_assets=str(PLUS))


def variant(plus, category, *, level=None, suffix=""):
    """The first task of `category` (and level) on the shared base task whose name ends with `suffix`."""
    for e in plus.entries:
        if e.base == BASE and e.category == category and (level is None or e.level == level) and e.name.endswith(suffix):
            return e.task_id
    raise LookupError(category)


@pytest.fixture(scope="module")
def env(plus):
    env = plus.make_env(PolicyNeeds(cameras=("third_person",), image_size=SIZE, segmentation=True, privileged=True))
    yield env
    env.close()


@pytest.fixture(scope="module")
def reference(plus, env):
    """A language variant: the base task's scene exactly (only the instruction differs)."""
    return env.reset(Episode("libero_plus", variant(plus, "Language Instructions"), 0, 0))


def image_change(a, b) -> float:
    return float(np.abs(a.images["third_person"].astype(float) - b.images["third_person"]).mean())


# ---------------------------------------------------------------------------------------------- task list


def test_all_10030_names_parse_to_a_libero_base_task(plus):
    from lamp_bench.suites.libero import import_libero

    import_libero()  # writes LIBERO's config first (the package prompts on stdin without one)
    from libero.libero.benchmark.libero_suite_task_map import libero_task_map

    assert len(plus.entries) == 10_030 and [e.task_id for e in plus.entries] == list(range(10_030))
    assert Counter(e.source_suite for e in plus.entries) == {"libero_spatial": 2402, "libero_object": 2518,
                                                             "libero_goal": 2591, "libero_10": 2519}
    assert set(Counter(e.category for e in plus.entries)) == set(CATEGORIES)
    assert all(e.base in libero_task_map[e.source_suite] for e in plus.entries)

    base, p = parse_name(f"{BASE}_view_289_15_120_2_352_initstate_0", "Camera Viewpoints", 5)
    assert base == BASE and p == {"camera_orbit_deg": -71.0, "camera_elevation_deg": 15.0,
                                  "camera_distance_scale": 1.2, "camera_yaw_deg": 2.0, "camera_pitch_deg": -8.0}
    assert parse_name(f"{BASE}_view_0_0_100_0_0_initstate_0_noise_29", "Sensor Noise", 5)[1] == {
        "noise_index": 29, "noise_kind": "zoom_blur", "noise_severity": 9}
    assert parse_name(f"{BASE}_view_0_0_100_0_0_initstate_305", "Robot Initial States", 5)[1][
        "robot_init_offset_rad"] == 0.4
    assert parse_name(f"{BASE}_add_24", "Objects Layout", 5)[1]["distractors"] == 4
    moved = parse_name("put_the_bowl_on_the_plate_moved_level2_sample1", "Objects Layout", 3)
    assert moved == ("put_the_bowl_on_the_plate", {"distractors": 0, "layout_variant": 1, "displacement_m": 0.04,
                                                   "layout_moved": True})
    assert parse_name("turn_on_the_stove_light_11", "Light Conditions", None)[1] == {"light_variant": 11, "light_level": 3}
    assert parse_name(f"{BASE}_tb_3", "Background Textures", 2)[1]["texture_surfaces"] == "support+floor+walls"
    with pytest.raises(ValueError, match="unknown LIBERO-Plus category"):
        parse_name(BASE, "Smells", 1)


def test_default_subset_is_stratified_deterministic_and_labelled(plus):
    tasks = plus.tasks()
    assert len(tasks) == 35 and Counter(t.extra["category"] for t in tasks) == {c: 5 for c in CATEGORIES}
    for category in CATEGORIES:
        chosen = [t for t in tasks if t.extra["category"] == category]
        assert {t.extra["difficulty_level"] for t in chosen} == {1, 2, 3, 4, 5}
        assert {t.extra["source_suite"] for t in chosen} == set(SOURCE_SUITES)
    again = SUITES.build("libero_plus", assets=str(ASSETS), plus_assets=str(PLUS))
    assert [t.task_id for t in again.tasks()] == [t.task_id for t in tasks]
    task = tasks[0]
    assert {"category", "difficulty_level", "backend", "source_suite", "official_id", "base_task"} <= set(task.extra)
    assert task.extra["backend"] == "lamp-bench" and task.dataset == task.extra["source_suite"]
    assert plus.task(task.task_id) is task and plus.task(10_029).name == plus.entries[10_029].name
    assert plus.max_steps(plus.task(10_029)) == 520 and plus.max_steps(tasks[0]) == 220
    assert [e.init_index for e in plus.episodes()] == [0] * 35  # 1 trial per task
    language = plus.task(variant(plus, "Language Instructions"))
    assert language.instruction != BASE.replace("_", " ") and language.extra["language_variant"] >= 1

    everything = SUITES.build("libero_plus", assets=str(ASSETS), plus_assets=str(PLUS), per_category="all")
    assert len(everything.tasks()) == 10_030
    narrow = SUITES.build("libero_plus", assets=str(ASSETS), plus_assets=str(PLUS), per_category=3,
                          suites="libero_10", categories=["Sensor Noise", "Light Conditions"])
    assert len(narrow.tasks()) == 6 and {t.extra["source_suite"] for t in narrow.tasks()} == {"libero_10"}
    fast = SUITES.build("libero_plus", assets=str(ASSETS), plus_assets=str(PLUS), render="fast")
    assert fast.protocol_fields()["render"] == "fast" and plus.protocol_fields()["render"] == "exact"
    prov = plus.provenance()
    assert prov["backend"] == "lamp-bench" and prov["comparable"] is False and "not comparable" in prov["plus_note"]
    assert prov["selection"]["tasks"] == 35 and len(prov["plus_assets_identity"]) == 16


def test_bad_configuration_is_a_clear_error(tmp_path):
    load_builtin_entries()
    with pytest.raises(ConfigError, match=f"{tmp_path / 'x'} does not exist.*{LIBERO_PLUS_ASSETS_ENV}"):
        SUITES.build("libero_plus", assets=str(ASSETS), plus_assets=str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="has no 'task_classification.json'"):
        SUITES.build("libero_plus", assets=str(ASSETS), plus_assets=str(tmp_path))
    with pytest.raises(ValueError, match="per_category must be a positive integer or 'all'"):
        SUITES.build("libero_plus", assets=str(ASSETS), plus_assets=str(PLUS), per_category=0)
    with pytest.raises(ValueError, match="unknown LIBERO-Plus category"):
        SUITES.build("libero_plus", assets=str(ASSETS), plus_assets=str(PLUS), categories="Smells")
    with pytest.raises(ConfigError, match="needs the LIBERO-Plus package"):
        SUITES.build("libero_plus", assets=str(ASSETS), plus_assets=str(PLUS), backend="official")


def test_corruptions_grow_with_severity_and_follow_the_seed():
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[::8] = 255  # stripes: every blur shows
    image[:, 40:80] = [200, 60, 20]
    for kind in NOISE_KINDS:
        mild = corrupt(image, kind, 1, np.random.default_rng(0))
        strong = corrupt(image, kind, 10, np.random.default_rng(0))
        assert mild.shape == image.shape and mild.dtype == np.uint8
        change = lambda out: np.abs(out.astype(float) - image).mean()
        assert 0 < change(mild) < change(strong), kind
        assert np.array_equal(strong, corrupt(image, kind, 10, np.random.default_rng(0))), kind
    for kind in ("motion_blur", "fog", "glass_blur"):  # the random ones
        assert not np.array_equal(corrupt(image, kind, 5, np.random.default_rng(0)),
                                  corrupt(image, kind, 5, np.random.default_rng(1))), kind


def test_distractor_bddl_declares_new_libero_objects(tmp_path):
    from lamp_bench.suites.libero import libero_package_dir

    base = libero_package_dir() / "bddl_files" / "libero_object" / "pick_up_the_milk_and_place_it_in_the_basket.bddl"
    kinds = choose_distractors(base.read_text(), 3, 7)
    assert len(kinds) == 3 and "milk" not in kinds and kinds == choose_distractors(base.read_text(), 3, 7)
    path = write_distractor_bddl(base, kinds, tmp_path)
    text = path.read_text()
    for i, kind in enumerate(kinds):
        assert f"{kind}_{90 + i} - {kind}" in text and f"(On {kind}_{90 + i} floor_lamp_bench_distractor_region)" in text
    assert write_distractor_bddl(base, kinds, tmp_path) == path  # content-addressed, written once


# ---------------------------------------------------------------------------------------------- simulator


def test_language_variant_keeps_the_scene_and_changes_the_instruction(plus, reference):
    assert reference.instruction == plus.task(variant(plus, "Language Instructions")).instruction
    assert reference.instruction.lower() != BASE.replace("_", " ")
    assert reference.images["third_person"].std() > 20


def test_camera_viewpoint_moves_the_camera_as_the_name_says(plus, env, reference):
    from scipy.spatial.transform import Rotation

    task_id = variant(plus, "Camera Viewpoints", suffix="_view_15_15_100_0_0_initstate_0")
    obs = env.reset(Episode("libero_plus", task_id, 0, 0))
    assert image_change(obs, reference) > 10
    before, after = reference.extrinsics["third_person"], obs.extrinsics["third_person"]
    # an orbit of 15 degrees about the vertical after 15 degrees of elevation, in world axes
    expected = (Rotation.from_euler("z", 15, degrees=True) * Rotation.from_euler("y", -15, degrees=True)).as_matrix()
    assert np.allclose(after[:3, :3] @ before[:3, :3].T, expected, atol=1e-4)
    assert after[2, 3] > before[2, 3] + 0.05  # raised by the elevation
    assert np.allclose(obs.intrinsics["third_person"], reference.intrinsics["third_person"])  # no FOV change
    again = env.reset(Episode("libero_plus", task_id, 0, 0))
    assert np.array_equal(again.images["third_person"], obs.images["third_person"])


def test_sensor_noise_corrupts_the_image_deterministically_per_seed(plus, env, reference):
    task_id = variant(plus, "Sensor Noise", suffix="_noise_5")  # motion blur, severity 5 (random direction)
    first = env.reset(Episode("libero_plus", task_id, 0, 0))
    same = env.reset(Episode("libero_plus", task_id, 0, 0))
    other = env.reset(Episode("libero_plus", task_id, 0, 1))
    assert image_change(first, reference) > 2
    assert np.array_equal(first.images["third_person"], same.images["third_person"])
    assert not np.array_equal(first.images["third_person"], other.images["third_person"])
    assert first.segmentation["third_person"].tolist() == reference.segmentation["third_person"].tolist()


def test_distractors_are_added_on_free_spots_and_the_oracle_still_succeeds(plus, env, reference):
    """Objects Layout with LIBERO objects as distractors; the quick representative of solvability."""
    load_builtin_entries()
    task_id = variant(plus, "Objects Layout", suffix="_add_14")  # ceil(14/6) = 3 distractors
    obs = env.reset(Episode("libero_plus", task_id, 0, 0))
    placed = env.episode_info()["distractors_placed"]
    assert len(placed) == 3 and set(reference.privileged["objects"]) < set(obs.privileged["objects"])
    table = reference.privileged["objects"]["plate_1"]["aabb"][0, 2]
    for name in placed:
        assert abs(obs.privileged["objects"][name]["aabb"][0, 2] - table) < 0.02  # standing on the table
    seg, names = obs.segmentation["third_person"], obs.privileged["segmentation_names"]
    assert np.isin(seg, [b for b, n in names.items() if n in placed]).sum() > 30  # in view
    oracle = POLICIES.build("oracle")
    task = plus.task(task_id)
    oracle.reset([task], [0])
    for _ in range(plus.max_steps(task)):
        result = env.step(oracle.act([obs])[0])
        obs = result.observation
        if result.success:
            break
    assert result.success


@pytest.mark.slow
def test_every_other_category_changes_what_it_should(plus, env, reference):
    robot = env.reset(Episode("libero_plus", variant(plus, "Robot Initial States", level=5), 0, 0))
    assert np.linalg.norm(robot.privileged["eef_pos"] - reference.privileged["eef_pos"]) > 0.03
    assert env.episode_info()["robot_init_offset_rad"] > 0.2
    light = env.reset(Episode("libero_plus", variant(plus, "Light Conditions", level=5), 0, 0))
    assert image_change(light, reference) > 10
    assert light.segmentation["third_person"].tolist() == reference.segmentation["third_person"].tolist()
    texture = env.reset(Episode("libero_plus", variant(plus, "Background Textures", suffix="_tb_12"), 0, 0))
    assert image_change(texture, reference) > 5 and len(env.episode_info()["textures"]) >= 3  # table, floor, walls
    layout = env.reset(Episode("libero_plus", variant(plus, "Objects Layout", suffix="_level5_sample1"), 0, 0))
    assert env.episode_info()["displacement_applied_m"] > 0.02
    moved = [np.linalg.norm(layout.privileged["objects"][n]["pos"][:2] - reference.privileged["objects"][n]["pos"][:2])
             for n in ("akita_black_bowl_1", "plate_1")]
    assert max(moved) > 0.03


@pytest.mark.slow
@pytest.mark.ci
def test_oracle_solves_a_sample_of_perturbations_and_records_group_by_category(plus, tmp_path):
    """One task per category on libero_spatial (whose goals the oracle can do), through the runner into a
    store; the store's frame groups the records by info.category."""
    load_builtin_entries()
    sample = SUITES.build("libero_plus", assets=str(ASSETS), plus_assets=str(PLUS), per_category=1,
                          suites="libero_spatial")
    store = EpisodeStore(tmp_path)
    writer = store.writer()
    records = run_episodes(POLICIES.build("oracle"), sample, sample.episodes(), writer.append)
    writer.close()
    assert len(records) == 7 and all(r["success"] for r in records), [(r["task_name"], r["failure_reason"]) for r in records]
    frame = store.dataframe()
    assert sorted(frame["info.category"]) == sorted(CATEGORIES)
    assert frame.groupby("info.category")["success"].mean().to_dict() == {c: 1.0 for c in CATEGORIES}
    assert set(frame["info.backend"]) == {"lamp-bench"} and set(frame["info.source_suite"]) == {"libero_spatial"}
