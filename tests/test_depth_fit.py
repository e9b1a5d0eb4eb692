"""The depth stand-in (models/training/depth_fit.py): fitted on demonstrations whose depth is a known
function of the image, it must learn that function (held-out error far below the unfitted network's),
save a folder the real loader accepts, and say what it is."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lamp_bench.harness.config import ConfigError
from lamp_bench.models.lamp.depth import build_depth_estimator
from lamp_bench.models.training.depth_fit import STANDIN_FILE, fit_depth_standin
from lamp_bench.models.training.demos import DemoWriter, Frame, TaskInfo

SIZE = 56


def synthetic_demos(folder: Path, demos: int = 6, steps: int = 8) -> Path:
    """Images split into a top and a bottom band of random grey levels v; the depth of a pixel is
    0.5 + 2 v metres (brighter is farther), so an estimator can only be right by reading the image."""
    rng = np.random.default_rng(0)
    k = np.array([[50.0, 0, 27.5], [0, 50.0, 27.5], [0, 0, 1]])
    writer = DemoWriter(folder / "libero_spatial" / "task_demo.hdf5",
                        TaskInfo("libero_spatial", 0, "task", "do it", "libero_spatial"), ("third_person",), SIZE)
    for d in range(demos):
        frames = []
        for _ in range(steps):
            level = np.repeat(rng.uniform(0.1, 0.9, 2), SIZE // 2)[:, None] * np.ones((1, SIZE))  # (S, S)
            image = np.repeat((level * 255).round().astype(np.uint8)[..., None], 3, axis=-1)
            frames.append(Frame(action=np.zeros(7), images={"third_person": image},
                                proprio=np.r_[np.zeros(6), 1.0, 0, 0], depth={"third_person": 0.5 + 2.0 * level},
                                intrinsics={"third_person": k}, extrinsics={"third_person": np.eye(4)}))
        writer.add(d, 0, True, frames)
    return folder


def test_the_stand_in_learns_depth_from_the_image_and_loads_like_published_weights(tmp_path):
    demos = synthetic_demos(tmp_path / "demos")
    untrained = fit_depth_standin([demos], tmp_path / "untrained", steps=1, input_size=SIZE, log=lambda _: None)
    fitted = fit_depth_standin([demos], tmp_path / "dav2", steps=300, batch_size=16, lr=3e-3, input_size=SIZE,
                               log=lambda _: None)
    # ~0.17 after 300 steps, from ~5.8 unfitted (measured): a tenth of the unfitted error, and good in absolute terms
    assert fitted["held_out_abs_rel"] < min(0.3, untrained["held_out_abs_rel"] / 10)
    assert fitted["data"]["demos"] == 6 and fitted["data"]["held_out_demos"] and "NOT the published" in fitted["what"]
    assert json.loads((tmp_path / "dav2" / STANDIN_FILE).read_text())["weights_hash"] == fitted["weights_hash"]
    loaded = build_depth_estimator("dav2", weights=tmp_path / "dav2", input_size=SIZE)  # the real loader, strict
    assert loaded.describe()["weights_hash"] == fitted["weights_hash"]
    assert loaded.describe()["stand_in"] == fitted["what"]  # provenance of every episode says what the weights are
    image = torch.full((1, 3, SIZE, SIZE), 0.7)
    with torch.no_grad():
        assert loaded(image).mean().item() == pytest.approx(0.5 + 2.0 * 0.7, rel=0.3)


def test_bad_input_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no demonstration files"):
        fit_depth_standin([tmp_path / "empty"], tmp_path / "out", steps=1)
    one = synthetic_demos(tmp_path / "one", demos=1, steps=2)
    with pytest.raises(ConfigError, match="too few to hold some out"):
        fit_depth_standin([one], tmp_path / "out", steps=1)
    with pytest.raises(ConfigError, match="unknown depth source 'dpt'"):
        fit_depth_standin([one], tmp_path / "out", source="dpt")
