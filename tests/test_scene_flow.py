"""Scene-flow labels: ICP/Kabsch on known motions, the `sim` and `icp` sources on a real demonstration."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from demo_data import demo_file, needs_libero

from lamp_bench.harness.registry import UnknownNameError
from lamp_bench.models.training.demos import DemoReader, inspect_demo_file
from lamp_bench.models.training.scene_flow import FLOW_SOURCES, FlowFrame, flow_labels, icp, kabsch
from scipy.spatial.transform import Rotation


def test_kabsch_and_icp_recover_a_rigid_motion():
    rng = np.random.default_rng(0)
    cloud = rng.uniform(-0.1, 0.1, (400, 3)) * [1, 2, 0.5]
    rot = Rotation.from_rotvec([0.02, -0.03, 0.05]).as_matrix()
    trans = np.array([0.01, -0.004, 0.006])
    moved = cloud @ rot.T + trans
    r, t = kabsch(cloud, moved)
    assert np.allclose(r, rot, atol=1e-9) and np.allclose(t, trans, atol=1e-9)
    r, t = icp(cloud, moved[rng.permutation(400)])  # no correspondences given
    assert np.allclose(cloud @ r.T + t, moved, atol=1e-4)


def test_unknown_flow_source_names_the_known_ones():
    assert {"icp", "sim"} <= set(FLOW_SOURCES.names())
    with pytest.raises(UnknownNameError, match="Known scene-flow label sources: icp, sim"):
        FLOW_SOURCES.check("optical")


@needs_libero
@pytest.mark.slow
@pytest.mark.ci
def test_icp_and_sim_labels_agree_on_the_moving_bowl():
    """Where the oracle moves the bowl fastest, both sources give its pixels the same motion direction;
    per-segment ICP recovers the magnitude that one global fit (the paper's literal recipe) loses."""
    info = inspect_demo_file(demo_file())
    reader = DemoReader(info)
    with h5py.File(info.path) as f:
        bowl = json.loads(f["data/demo_0/obs/body_poses"].attrs["names"]).index("akita_black_bowl_1")
    poses = reader.body_poses(0)
    k, e = reader.camera(0)
    t = int(np.argmax(np.linalg.norm(np.diff(poses[:, bowl, :3], axis=0), axis=1)))
    frames = [FlowFrame(reader.depth(0, s), k[s], e[s], reader.segmentation(0, s), poses[s]) for s in (t, t + 1)]
    v, u = np.nonzero(reader.segmentation(0, t) == bowl)
    uv = np.stack([u, v], axis=1).astype(float)
    assert len(uv) >= 10
    sim = flow_labels("sim", *frames, uv).mean(0)
    per_segment = flow_labels("icp", *frames, uv).mean(0)
    global_fit = FLOW_SOURCES.get("icp")(*frames, uv, per_segment=False).mean(0)
    cosine = sim @ per_segment / (np.linalg.norm(sim) * np.linalg.norm(per_segment))
    assert np.linalg.norm(sim) > 0.005  # the bowl moves more than 5 mm in this step
    assert cosine > 0.9
    assert abs(np.linalg.norm(per_segment) / np.linalg.norm(sim) - 1) < 0.35
    assert np.linalg.norm(per_segment - sim) < np.linalg.norm(global_fit - sim)
    # The static background has no flow under either source.
    table = reader.segmentation(0, t) == 0
    v, u = np.nonzero(table)
    background = np.stack([u, v], axis=1).astype(float)[:50]
    assert np.abs(flow_labels("sim", *frames, background)).max() < 1e-9
    assert np.abs(flow_labels("icp", *frames, background)).max() < 2e-3
