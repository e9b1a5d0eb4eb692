"""SimplerEnv-WidowX on real ManiSkill3 (mani-skill 3.0.1, SAPIEN CPU rendering through lavapipe Vulkan).

One environment is shared by the module (creating one costs ~10-20 s); the full oracle runs are `slow`."""
import os
from pathlib import Path

import numpy as np
import pytest
from lamp_bench.harness.config import MANISKILL_ASSETS_ENV, ConfigError
from lamp_bench.harness.policy import PolicyNeeds
from lamp_bench.harness.registry import POLICIES, SUITES, load_builtin_entries
from lamp_bench.harness.runner import run_episodes
from lamp_bench.harness.suite import Episode
from scipy.spatial.transform import Rotation

ASSETS = Path(os.environ.get(MANISKILL_ASSETS_ENV) or Path(__file__).resolve().parents[2] / "shared" / "assets" / "maniskill")
pytestmark = [
    pytest.mark.maniskill,
    pytest.mark.skipif(not (ASSETS / "data" / "tasks").is_dir(), reason=f"no ManiSkill asset pack at {ASSETS}"),
]
CARROT = 1
SIZE = 128


@pytest.fixture(scope="module")
def suite():
    load_builtin_entries()
    return SUITES.build("simpler_widowx", assets=str(ASSETS))


@pytest.fixture(scope="module")
def env(suite):
    env = suite.make_env(PolicyNeeds(cameras=("third_person",), image_size=SIZE, depth=True, segmentation=True,
                                     proprio=True, privileged=True))
    yield env
    env.close()


def test_tasks_follow_simplerenv_protocol(suite):
    tasks = suite.tasks()
    assert [t.name for t in tasks] == ["PutSpoonOnTableClothInScene-v1", "PutCarrotOnPlateInScene-v1",
                                       "StackGreenCubeOnYellowCubeBakedTexInScene-v1", "PutEggplantInBasketScene-v1"]
    assert [suite.max_steps(t) for t in tasks] == [60, 60, 60, 120]
    assert {t.dataset for t in tasks} == {"bridge_orig"} and tasks[1].instruction == "put carrot on plate"
    assert suite.default_episodes_per_task() == 24 == suite.num_init_states(tasks[0])
    episodes = suite.episodes()
    assert len(episodes) == 96 and [e.init_index for e in episodes[:24]] == list(range(24))
    with pytest.raises(ValueError, match="24 initial states"):
        suite.episodes(episodes_per_task=25)


def test_action_conversion_matches_the_controller_convention(suite):
    import torch
    from lamp_bench.suites.simpler_widowx import import_maniskill, to_env_action

    import_maniskill(suite.assets)  # ManiSkill fixes its asset folder at import
    from mani_skill.utils.geometry.rotation_conversions import euler_angles_to_matrix

    action = np.array([0.4, -1.0, 0.2, 0.3, -0.5, 0.8, 1.0])
    env_action = to_env_action(action)
    assert np.allclose(env_action[:3], [0.02, -0.05, 0.01])  # 1.0 = 5 cm per step
    assert env_action[6] == -1.0  # harness "close" (+1) is ManiSkill's -1
    # the controller turns its Euler triple into exactly the rotation the axis-angle asks for
    matrix = euler_angles_to_matrix(torch.tensor(env_action[3:6]), "XYZ").numpy()
    assert np.allclose(matrix, Rotation.from_rotvec(action[3:6] * 0.5).as_matrix(), atol=1e-6)
    assert np.allclose(to_env_action(np.array([2.0, 0, 0, 0, 0, 0, -3]))[[0, 6]], [0.05, 1.0])  # clipped
    with pytest.raises(ValueError, match="finite 7-DoF"):
        to_env_action(np.array([0.0, np.nan, 0, 0, 0, 0, 1]))


def test_provenance_marks_stand_ins_as_not_comparable(suite):
    prov = suite.provenance()
    assert prov["assets"] == str(ASSETS.resolve()) and len(prov["assets_identity"]) == 16
    assert prov["versions"]["mani-skill"] == "3.0.1" and prov["versions"]["sapien"] == "3.0.3"
    assert prov["sim_backend"] == "cpu" and prov["render_backend"] in ("cpu", "gpu")
    if prov["assets_stand_ins"]:
        assert prov["comparable"] is False and "not comparable with published SimplerEnv" in prov["assets_note"]
        assert any("stages" in folder for folder in prov["assets_stand_ins"])


def test_bad_configuration_is_a_clear_error(tmp_path, suite):
    with pytest.raises(ConfigError, match=f"{tmp_path / 'nope'} does not exist.*{MANISKILL_ASSETS_ENV}"):
        SUITES.build("simpler_widowx", assets=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="bridge_v2_real2sim_dataset"):
        SUITES.build("simpler_widowx", assets=str(tmp_path))
    with pytest.raises(ValueError, match="no camera role.*wrist"):
        suite.make_env(PolicyNeeds(cameras=("wrist",)))
    with pytest.raises(ValueError, match="depth/segmentation need"):
        suite.make_env(PolicyNeeds(cameras=(), depth=True))


def test_observation_geometry_lifts_object_pixels_into_their_boxes(env):
    """Depth, intrinsics and extrinsics of the resized image put each task object's segmented pixels inside its
    simulator box; the RGB image is the green-screened BridgeData photo with the objects rendered on it."""
    obs = env.reset(Episode("simpler_widowx", CARROT, 3, 0))
    assert obs.instruction == "put carrot on plate"
    image, depth, seg = obs.images["third_person"], obs.depth["third_person"], obs.segmentation["third_person"]
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8 and image.std() > 20
    assert depth.shape == seg.shape == (SIZE, SIZE) and depth.dtype == np.float32 and seg.dtype == np.int32
    assert 0.2 < np.median(depth) < 1.5
    K, E = obs.intrinsics["third_person"], obs.extrinsics["third_person"]
    assert np.allclose(E[:3, :3] @ E[:3, :3].T, np.eye(3), atol=1e-5) and np.linalg.det(E[:3, :3]) > 0
    names = obs.privileged["segmentation_names"]
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    for name, obj in obs.privileged["objects"].items():
        mask = np.isin(seg, [i for i, n in names.items() if n == name])
        assert mask.sum() > 20, name
        z = depth[mask]
        world = np.stack([(cols[mask] - K[0, 2]) / K[0, 0] * z, (rows[mask] - K[1, 2]) / K[1, 1] * z, z], 1)
        world = world @ E[:3, :3].T + E[:3, 3]
        low, high = obj["aabb"]
        assert np.all((world > low - 0.01) & (world < high + 0.01), axis=1).mean() > 0.9, name
    carrot = np.isin(seg, [i for i, n in names.items() if n.startswith("bridge_carrot")])
    assert image[carrot][:, 0].mean() > image[carrot][:, 2].mean() + 50  # the carrot is orange: red >> blue
    state = obs.privileged
    assert state["robot"] == "widowx" and state["goal"] == [("on", "bridge_carrot_generated_modified",
                                                             "bridge_plate_objaverse_larger")]
    assert obs.proprio.shape == (9,) and np.allclose(obs.proprio[:3], state["eef_pos"])


def test_actions_move_the_hand_in_the_base_frame_and_close_the_gripper(env):
    obs = env.reset(Episode("simpler_widowx", CARROT, 0, 0))
    start = obs.privileged["eef_target_pos"]
    for _ in range(2):
        result = env.step(np.array([1.0, 0, 0, 0, 0, 0, -1.0]))
    # the WidowX base faces world -x: two steps of +1 move the controller's target 10 cm along world -x
    assert np.allclose(result.observation.privileged["eef_target_pos"] - start, [-0.1, 0, 0], atol=1e-4)
    opened = result.observation.privileged["gripper_qpos"]
    for _ in range(3):
        result = env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    assert np.all(result.observation.privileged["gripper_qpos"] < opened - 0.01)
    with pytest.raises(ValueError, match="finite 7-DoF"):
        env.step(np.zeros(6))


def test_resets_are_deterministic_whatever_ran_before(env):
    actions = [np.array([0.3, -0.2, -0.5, 0.1, 0, 0.2, -1.0])] * 3
    runs = []
    for episode in (Episode("simpler_widowx", CARROT, 5, 0), Episode("simpler_widowx", CARROT, 6, 0),
                    Episode("simpler_widowx", CARROT, 5, 0)):
        obs = env.reset(episode)
        for action in actions:
            obs = env.step(action).observation
        runs.append((obs.images["third_person"], obs.privileged["eef_pos"],
                     obs.privileged["objects"]["bridge_carrot_generated_modified"]["pos"]))
    assert np.array_equal(runs[0][0], runs[2][0]) and np.allclose(runs[0][1], runs[2][1])
    assert np.allclose(runs[0][2], runs[2][2]) and not np.allclose(runs[0][2], runs[1][2])  # config 6 differs


def test_success_is_judged_at_the_final_step_only(env, suite):
    """A scripted oracle episode on the shared env: done only at step 60, success reported there, and the
    grasp metrics of SimplerEnv recorded."""
    load_builtin_entries()
    oracle = POLICIES.build("oracle")
    task = suite.task(CARROT)
    obs = env.reset(Episode("simpler_widowx", CARROT, 0, 0))
    oracle.reset([task], [0])
    results = []
    for _ in range(suite.max_steps(task)):
        results.append(env.step(oracle.act([obs])[0]))
        obs = results[-1].observation
    assert [r.done for r in results] == [False] * 59 + [True]
    assert not any(r.success for r in results[:-1]) and results[-1].success
    assert env.episode_info() == {"partial_success": True, "consecutive_grasp": True, "success_once": True}


@pytest.mark.slow
def test_oracle_through_the_runner_on_all_four_tasks(suite):
    """Two object configurations per task, one env rebuilt per task change, records carry the grasp metrics."""
    load_builtin_entries()
    records = run_episodes(POLICIES.build("oracle"), suite, suite.episodes(episodes_per_task=2), lambda r: None)
    assert len(records) == 8 and all(r["status"] != "error" for r in records)
    assert [r["steps"] for r in records] == [60] * 6 + [120] * 2
    assert sum(r["success"] for r in records) >= 6
    assert all(r["info"]["partial_success"] for r in records) and all("consecutive_grasp" in r["info"] for r in records)
    assert records[0]["provenance"]["suite"]["comparable"] is False
