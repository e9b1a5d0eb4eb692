"""The LIBERO suites on the real simulator (libero 0.1.1, robosuite 1.4, MuJoCo, EGL/OSMesa CPU rendering)."""
import os
from pathlib import Path

import numpy as np
import pytest

from lamp_bench.harness.config import LIBERO_ASSETS_ENV, ConfigError
from lamp_bench.harness.policy import PolicyNeeds
from lamp_bench.harness.registry import SUITES, load_builtin_entries
from lamp_bench.harness.suite import Episode

ASSETS = Path(os.environ.get(LIBERO_ASSETS_ENV) or Path(__file__).resolve().parents[2] / "shared" / "assets" / "libero")
pytestmark = pytest.mark.skipif(not (ASSETS / "scenes").is_dir(), reason=f"no LIBERO asset pack at {ASSETS}")


@pytest.fixture(scope="module")
def spatial():
    load_builtin_entries()
    return SUITES.build("libero_spatial", assets=str(ASSETS))


def test_suites_follow_openvla_protocol(spatial):
    tasks = spatial.tasks()
    assert len(tasks) == 10 and [t.task_id for t in tasks] == list(range(10))
    assert tasks[4].instruction == ("pick up the black bowl in the top drawer of the wooden cabinet "
                                    "and place it on the plate")
    assert {t.dataset for t in tasks} == {"libero_spatial"}
    assert spatial.max_steps(tasks[0]) == 220 and spatial.protocol.settle_steps == 10
    assert spatial.num_init_states(tasks[0]) == 50 == spatial.default_episodes_per_task()
    assert [e.init_index for e in spatial.episodes(task_ids=[3], episodes_per_task=3)] == [0, 1, 2]
    long_horizon = SUITES.build("libero_10", assets=str(ASSETS))
    assert long_horizon.max_steps(long_horizon.task(0)) == 520
    assert long_horizon.task(2).instruction == "turn on the stove and put the moka pot on it"  # scene prefix dropped
    libero_90 = SUITES.build("libero_90", assets=str(ASSETS))
    assert len(libero_90.tasks()) == 90 and libero_90.max_steps(libero_90.task(0)) == 400
    assert SUITES.build("libero_object", assets=str(ASSETS)).protocol.max_steps == 280
    assert SUITES.build("libero_goal", assets=str(ASSETS)).protocol.max_steps == 300


def test_provenance_names_asset_pack_and_stand_ins(spatial):
    prov = spatial.provenance()
    assert prov["assets"] == str(ASSETS.resolve()) and len(prov["assets_identity"]) == 16
    assert prov["assets_stand_ins"] == (ASSETS / "STAND_INS.txt").is_file()
    if prov["assets_stand_ins"]:
        assert "not comparable with published LIBERO numbers" in prov["assets_note"]
    assert prov["versions"]["libero"] == "0.1.1" and prov["versions"]["mujoco"]
    assert prov["protocol"] == {"max_steps": 220, "settle_steps": 10, "render_size": 256, "episodes_per_task": 50}


def test_missing_or_wrong_asset_folder_is_a_clear_error(tmp_path, monkeypatch):
    load_builtin_entries()
    with pytest.raises(ConfigError, match=f"{tmp_path / 'missing'} does not exist.*{LIBERO_ASSETS_ENV}"):
        SUITES.build("libero_spatial", assets=str(tmp_path / "missing"))
    monkeypatch.setenv(LIBERO_ASSETS_ENV, str(tmp_path))
    with pytest.raises(ConfigError, match="has no 'scenes'"):
        SUITES.build("libero_goal")


def test_init_states_load_weights_only_and_forged_pickle_is_refused(tmp_path, spatial):
    import torch

    from lamp_bench.suites.libero import libero_package_dir, load_init_states

    task = spatial.task(0)
    states = load_init_states(libero_package_dir() / "init_files" / "libero_spatial" / f"{task.name}.pruned_init")
    assert states.dtype == np.float64 and states.shape[0] == 50 and states.ndim == 2

    marker = tmp_path / "executed"

    class Forged:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    forged = tmp_path / "forged.pruned_init"
    torch.save(Forged(), forged)
    with pytest.raises(ValueError, match="refusing to load.*posix.system"):
        load_init_states(forged)
    assert not marker.exists()
    with pytest.raises(ConfigError, match="does not exist"):
        load_init_states(tmp_path / "nothing.pruned_init")


def test_no_camera_means_no_renderer_and_env_is_reused_per_task(spatial):
    env = spatial.make_env(PolicyNeeds(cameras=(), proprio=True, privileged=True))
    try:
        obs0 = env.reset(Episode("libero_spatial", 0, 0, 0))
        sim_env = env.sim_env
        assert not sim_env.has_offscreen_renderer and sim_env.sim._render_context_offscreen is None
        assert obs0.images == {} and obs0.depth == {} and obs0.proprio.shape == (9,)
        assert obs0.privileged["robot"] == "panda"
        assert obs0.privileged["goal"] == [("on", "akita_black_bowl_1", "plate_1")]
        drawer = obs0.privileged["joints"]["wooden_cabinet_1_top_level"]
        assert drawer["type"] == "slide" and drawer["fixture"] == "wooden_cabinet_1"
        assert set(drawer["ranges"]) == {"open", "close"}
        assert obs0.privileged["sites"]["wooden_cabinet_1_top_region"]["joints"] == ["wooden_cabinet_1_top_level"]
        bowl0 = obs0.privileged["objects"]["akita_black_bowl_1"]["pos"]
        obs1 = env.reset(Episode("libero_spatial", 0, 1, 0))
        assert env.sim_env is sim_env  # same task: the simulator is reused
        assert not np.allclose(obs1.privileged["objects"]["akita_black_bowl_1"]["pos"], bowl0)  # init state 1 applied
        step = env.step(np.array([0.5, 0, 0, 0, 0, 0, -1.0]))
        assert step.observation.proprio[0] > obs1.proprio[0] and not step.success  # +x moves the hand forward
        with pytest.raises(ValueError, match="7-DoF"):
            env.step(np.zeros(6))
        with pytest.raises(ValueError, match="init states 0..49"):
            env.reset(Episode("libero_spatial", 0, 50, 0))
        env.reset(Episode("libero_spatial", 1, 0, 0))
        assert env.sim_env is not sim_env  # another task: rebuilt
    finally:
        env.close()


def test_only_declared_cameras_are_rendered(spatial):
    env = spatial.make_env(PolicyNeeds(cameras=("wrist",), image_size=96))
    try:
        obs = env.reset(Episode("libero_spatial", 2, 0, 0))
        assert set(obs.images) == {"wrist"} and obs.images["wrist"].shape == (96, 96, 3)
        assert obs.images["wrist"].dtype == np.uint8 and obs.images["wrist"].std() > 5
        assert obs.depth == {} and obs.segmentation == {} and obs.proprio is None and obs.privileged == {}
    finally:
        env.close()
    with pytest.raises(ValueError, match="no camera role"):
        spatial.make_env(PolicyNeeds(cameras=("overhead",)))


def test_depth_intrinsics_extrinsics_lift_pixels_onto_objects(spatial):
    """Lifting an object's segmented pixels with depth, intrinsics and extrinsics lands them in the object's
    simulator box, for the (rotated, resized) images of both cameras; RGB shares that orientation."""
    size = 128
    env = spatial.make_env(PolicyNeeds(cameras=("third_person", "wrist"), image_size=size, depth=True,
                                       segmentation=True, privileged=True))
    try:
        obs = env.reset(Episode("libero_spatial", 0, 0, 0))
        names = obs.privileged["segmentation_names"]
        objects = obs.privileged["objects"]
        rows, cols = np.mgrid[0:size, 0:size]
        checked = 0
        for role in ("third_person", "wrist"):
            depth, seg, K, E = obs.depth[role], obs.segmentation[role], obs.intrinsics[role], obs.extrinsics[role]
            assert depth.shape == seg.shape == (size, size) and depth.dtype == np.float32 and seg.dtype == np.int32
            assert K[0, 0] < 0 < K[1, 1]  # the 180-degree rotation of MuJoCo's bottom-up image is a mirror
            assert np.allclose(E[:3, :3] @ E[:3, :3].T, np.eye(3), atol=1e-6) and np.linalg.det(E[:3, :3]) > 0
            assert 0.05 < np.median(depth) < 3.0
            for name in objects:  # bowls, plate, ramekin, cookie box, cabinet, stove
                ids = [b for b, n in names.items() if n == name]
                mask = np.isin(seg, ids)
                if mask.sum() < 20:
                    continue
                z = depth[mask]
                cam = np.stack([(cols[mask] - K[0, 2]) / K[0, 0] * z, (rows[mask] - K[1, 2]) / K[1, 1] * z, z], 1)
                world = cam @ E[:3, :3].T + E[:3, 3]
                low, high = objects[name]["aabb"]
                inside = np.all((world > low - 0.01) & (world < high + 0.01), axis=1)
                assert inside.mean() > 0.95, (role, name, inside.mean())
                checked += 1
        assert checked >= 10
        image, seg = obs.images["third_person"].astype(float), obs.segmentation["third_person"]
        bowl = np.isin(seg, [b for b, n in names.items() if n.startswith("akita_black_bowl")])
        plate = np.isin(seg, [b for b, n in names.items() if n == "plate_1"])
        assert image[bowl].mean() + 60 < image[plate].mean()  # black bowl pixels are darker than plate pixels
    finally:
        env.close()
