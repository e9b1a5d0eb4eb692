"""Demonstrations: LIBERO's HDF5 layout (ours and official), orientation, resumable collection, bad files."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from demo_data import ASSETS, COLLECT, collected, demo_file, needs_libero

from lamp_bench.models.lamp.action_tokenizer import proprio_features
from lamp_bench.models.training.dataset import SampleSpec, action_statistics, check_files
from lamp_bench.models.training.demos import DemoFileError, DemoReader, DemoWriter, Frame, TaskInfo, inspect_demo_file

TASK = TaskInfo("libero_spatial", 3, "put_it_there", "put it there", "libero_spatial", "x/libero_spatial/put_it_there.bddl")


def frames(n: int, size: int = 8, seed: int = 0) -> list[Frame]:
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n):
        out.append(Frame(
            action=rng.uniform(-1, 1, 7), images={"third_person": rng.integers(0, 255, (size, size, 3), dtype=np.uint8)},
            proprio=np.r_[rng.normal(size=3), 0, 0, 0, 1, 0.04, -0.04], state=rng.normal(size=5),
            depth={"third_person": rng.uniform(0.5, 2, (size, size)).astype(np.float32)},
            segmentation={"third_person": rng.integers(-1, 30, (size, size)).astype(np.int32)},
            intrinsics={"third_person": np.eye(3)}, extrinsics={"third_person": np.eye(4)},
            body_poses=rng.normal(size=(30, 7)),
        ))
    return out


def test_writer_round_trip_and_official_orientation(tmp_path):
    path = tmp_path / "libero_spatial" / "put_it_there_demo.hdf5"
    writer = DemoWriter(path, TASK, ("third_person",), 8)
    demo = frames(4)
    writer.add(init_index=2, seed=0, success=False, frames=demo[:2])  # failures are recorded, not written
    writer.add(init_index=5, seed=0, success=True, frames=demo, body_names=[f"b{i}" for i in range(30)])
    assert writer.attempted() == {2, 5} and writer.successes() == 1
    info = inspect_demo_file(path)
    assert (info.dataset, info.instruction, info.demos, info.lengths) == ("libero_spatial", "put it there", ["demo_0"], [4])
    assert info.flipped and info.has_depth and info.has_segmentation and info.has_body_poses and info.has_proprio
    reader = DemoReader(info)
    assert np.array_equal(reader.actions(0), np.stack([f.action for f in demo]))
    assert np.array_equal(reader.proprio(0), proprio_features(np.stack([f.proprio for f in demo])))
    for t in range(4):  # the reader gives back exactly what the suite showed the policy
        assert np.array_equal(reader.rgb(0, t, "third_person"), demo[t].images["third_person"])
        assert np.array_equal(reader.segmentation(0, t), demo[t].segmentation["third_person"])
    with h5py.File(path) as f:  # ... while the file holds LIBERO's upside-down (180-degree rotated) images
        stored = f["data/demo_0/obs/agentview_rgb"][0]
        assert np.array_equal(stored, demo[0].images["third_person"][::-1, ::-1])
        assert f["data"].attrs["macros_image_convention"] == "opengl" and f["data"].attrs["num_demos"] == 1
        assert list(f["data/demo_0/dones"]) == [0, 0, 0, 1] and list(f["data/demo_0/rewards"]) == [0, 0, 0, 1]
        assert f["data/demo_0/robot_states"].shape == (4, 9) and f["data/demo_0/obs/ee_ori"].shape == (4, 3)
        assert json.loads(f["data/demo_0/obs/body_poses"].attrs["names"])[3] == "b3"


def test_official_libero_file_reads_through_the_same_reader(tmp_path):
    """Official files: no lamp-bench attributes, instruction in problem_info, upside-down 128 px images."""
    path = tmp_path / "official" / "put_it_there_demo.hdf5"
    path.parent.mkdir()
    upright = np.random.default_rng(1).integers(0, 255, (3, 128, 128, 3), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"language_instruction": "put it there", "problem_name": "x"})
        data.attrs["bddl_file_name"] = "chiliocosm/bddl_files/libero_goal/put_it_there.bddl"
        data.attrs["macros_image_convention"] = "opengl"
        demo = data.create_group("demo_0")
        demo.create_dataset("actions", data=np.zeros((3, 7)))
        obs = demo.create_group("obs")
        obs.create_dataset("agentview_rgb", data=upright[:, ::-1, ::-1])
        obs.create_dataset("eye_in_hand_rgb", data=upright)
        obs.create_dataset("agentview_depth", data=np.zeros((3, 128, 128)))  # robosuite's z-buffer: not metres
    info = inspect_demo_file(path)
    assert info.dataset == "libero_goal" and info.instruction == "put it there"
    assert info.cameras == ("third_person", "wrist") and not info.has_depth and not info.has_segmentation
    assert np.array_equal(DemoReader(info).rgb(0, 1, "third_person"), upright[1])
    with pytest.raises(DemoFileError, match="no proprioception .*obs/ee_pos and obs/gripper_states"):
        check_files([info], SampleSpec(64, 8, motion=False, proprio=True))
    with h5py.File(path, "a") as f:
        f["data/demo_0/obs"].create_dataset("ee_pos", data=np.ones((3, 3)))
        f["data/demo_0/obs"].create_dataset("gripper_states", data=np.zeros((3, 2)))
    stats = action_statistics([inspect_demo_file(path)])["libero_goal"]
    assert np.array_equal(stats.proprio_q01, [1, 1, 1, 0, 0]) and np.array_equal(stats.proprio_q99, [1, 1, 1, 0, 0])


def test_bad_demo_files_are_named_with_the_problem(tmp_path):
    with pytest.raises(DemoFileError, match="does not exist"):
        inspect_demo_file(tmp_path / "missing.hdf5")
    (tmp_path / "text.hdf5").write_text("not hdf5")
    with pytest.raises(DemoFileError, match="text.hdf5 is not a readable HDF5 file"):
        inspect_demo_file(tmp_path / "text.hdf5")
    with h5py.File(tmp_path / "empty.hdf5", "w") as f:
        f.create_group("data").attrs["problem_info"] = json.dumps({"language_instruction": "x"})
    with pytest.raises(DemoFileError, match="empty.hdf5 holds no demo_<i> groups"):
        inspect_demo_file(tmp_path / "empty.hdf5")
    with h5py.File(tmp_path / "shape.hdf5", "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"language_instruction": "x"})
        data.create_group("demo_0/obs")
        data["demo_0"].create_dataset("actions", data=np.zeros((5, 6)))
    with pytest.raises(DemoFileError, match=r"demo_0/actions has shape \(5, 6\)"):
        inspect_demo_file(tmp_path / "shape.hdf5")
    path = tmp_path / "other" / "put_it_there_demo.hdf5"
    DemoWriter(path, TASK, ("third_person",), 8).add(0, 0, True, frames(2))
    with pytest.raises(DemoFileError, match="choose another --out folder"):
        DemoWriter(path, TASK, ("third_person", "wrist"), 8)


@needs_libero
@pytest.mark.slow
@pytest.mark.ci
def test_oracle_demos_in_real_libero_are_complete_and_collection_resumes():
    from lamp_bench.harness.demos import collect_demos

    root, summary = collected()
    (task,) = summary["tasks"]
    assert summary["demos"] == 1 and task["demos"] == 1 and task["short_by"] == 0
    info = inspect_demo_file(demo_file())
    assert info.instruction == "pick up the black bowl between the plate and the ramekin and place it on the plate"
    assert info.has_depth and info.has_segmentation and info.has_body_poses and info.cameras == ("third_person",)
    n = info.lengths[0]
    reader = DemoReader(info)
    with h5py.File(info.path) as f:
        demo = f["data/demo_0"]
        assert demo["states"].shape[0] == n and np.array_equal(demo.attrs["init_state"], demo["states"][0])
        assert demo["obs/agentview_rgb"].shape == (n, 64, 64, 3) and demo["obs/body_poses"].shape[0] == n
        names = json.loads(demo["obs/body_poses"].attrs["names"])
        bowl = names.index("akita_black_bowl_1")
        poses = demo["obs/body_poses"][()]
    # The oracle moved the bowl, and the lifted bowl pixels sit where the simulator says the bowl is.
    assert np.linalg.norm(poses[-1, bowl, :3] - poses[0, bowl, :3]) > 0.05
    from lamp_bench.models.training.scene_flow import FlowFrame, pixel_grid, query_world_points

    k, e = reader.camera(0)
    seg = reader.segmentation(0, 0)
    points = query_world_points(FlowFrame(reader.depth(0, 0), k[0], e[0]), pixel_grid(64, 64))
    assert np.linalg.norm(points[seg.ravel() == bowl].mean(0)[:2] - poses[0, bowl, :2]) < 0.03
    reader.close()
    # Re-running the same command skips the finished task: nothing new is attempted.
    again = collect_demos(out_dir=root, assets=ASSETS, progress=False, **COLLECT)
    assert again["tasks"][0]["new_attempts"] == 0 and again["demos"] == 1
