"""Depth estimators: loading tiny saved checkpoints of each kind, preprocessing, metric conversion,
calibration, and a clear error for every kind of bad weights folder. Random weights give degenerate
depth, so quality is never tested here; shapes, plumbing and values against a hand-run reference are."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import DepthAnythingConfig

from lamp_bench.models.lamp.config import DepthConfig
from lamp_bench.models.lamp.depth import (
    CALIBRATION,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SPECS,
    WEIGHTS_ENV,
    DepthEstimator,
    DepthWeightsError,
    DisparityCalibration,
    build_depth_estimator,
    calibrate_from_demos,
    fit_disparity_calibration,
    model_config,
    resize_depth,
)
from lamp_bench.models.lamp.model import count_parameters


def tiny_network(source: str, metric: bool = True):
    torch.manual_seed(0)
    cfg = model_config(source, tiny=True)
    if source == "dav2" and not metric:
        cfg = DepthAnythingConfig(**{**cfg.to_dict(), "depth_estimation_type": "relative", "max_depth": 1})
    return SPECS[source].model_class(cfg)


def saved(tmp_path: Path, source: str, metric: bool = True, calibration: DisparityCalibration | None = None) -> Path:
    folder = tmp_path / source
    tiny_network(source, metric).save_pretrained(folder)
    if calibration is not None:
        calibration.save(folder / CALIBRATION)
    return folder


@pytest.mark.parametrize("source,input_size,expected_size", [("dav2", 60, 56), ("midas", 80, 96), ("zoedepth", 64, 64)])
def test_saved_checkpoints_load_and_predict(tmp_path, source, input_size, expected_size):
    calibration = DisparityCalibration(0.5, 0.2) if source == "midas" else None
    folder = saved(tmp_path, source, calibration=calibration)
    estimator = build_depth_estimator(DepthConfig(source, input_size), weights=folder)
    assert estimator.size == expected_size  # a multiple of 14 (DINOv2 patches) or 32 (DPT/BEiT fusion)
    original, loaded = tiny_network(source).state_dict(), estimator.net.state_dict()
    assert original.keys() == loaded.keys()
    assert all(torch.equal(original[k], loaded[k]) for k in original)  # every saved tensor landed
    assert not any(p.requires_grad for p in estimator.parameters())
    images = torch.rand(2, 3, 100, 100)
    with torch.no_grad():
        depth = estimator(images)
    assert depth.shape == (2, 100, 100) and depth.dtype == torch.float32
    assert torch.isfinite(depth).all() and (depth > 0).all()
    assert estimator.describe()["weights_hash"] is not None


def test_preprocessing_and_metric_conversion_match_a_hand_run_network(tmp_path):
    folder = saved(tmp_path, "dav2", metric=False, calibration=DisparityCalibration(2.0, 0.5))
    estimator = build_depth_estimator("dav2", weights=folder, input_size=56)
    images = torch.rand(1, 3, 112, 112)
    x = F.interpolate(images, size=(56, 56), mode="bilinear", antialias=True, align_corners=False)
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        disparity = estimator.net(pixel_values=x).predicted_depth  # (1, 56, 56)
        expected = F.interpolate((1.0 / (2.0 * disparity + 0.5).clamp(min=0.01))[:, None], size=(112, 112),
                                 mode="bilinear", align_corners=False)[:, 0]
        assert torch.allclose(estimator(images), expected, atol=1e-6)
    # a processor config in the folder overrides the normalisation
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    other = build_depth_estimator("dav2", weights=folder, input_size=56)
    assert other.mean.flatten().tolist() == [0.5] * 3


def test_estimator_stays_frozen_inside_a_training_parent(tmp_path):
    estimator = build_depth_estimator("dav2", weights=saved(tmp_path, "dav2"), input_size=28)
    parent = torch.nn.Sequential(estimator).train()
    assert parent.training and not estimator.training and not estimator.net.training


def test_disparity_calibration_recovers_an_affine_map():
    disparity = torch.rand(4, 16, 16) * 3 + 0.1
    depth = 1.0 / (0.7 * disparity + 0.3)
    depth[0, 0, :4] = 0.0  # invalid pixels are ignored
    depth[1, 1, :4] = float("nan")
    fit = fit_disparity_calibration(disparity, depth)
    assert fit.scale == pytest.approx(0.7, rel=1e-6) and fit.shift == pytest.approx(0.3, rel=1e-6)
    valid = depth > 0
    assert torch.allclose(fit.to_metres(disparity)[valid], depth[valid], rtol=1e-5)
    with pytest.raises(ValueError, match="varying disparity"):
        fit_disparity_calibration(torch.ones(8), torch.ones(8))


def test_sim_depth_resizes_nearest_and_has_no_network():
    depth = torch.tensor([[[1.0, 1.0, 3.0, 3.0]] * 4])  # (1, 4, 4): a sharp edge
    small = resize_depth(depth.numpy(), 2)
    assert small.tolist() == [[[1.0, 3.0], [1.0, 3.0]]]  # no invented in-between depths
    with pytest.raises(ValueError, match="Observation.depth"):
        build_depth_estimator("sim")


def test_random_init_builds_the_published_sizes():
    with torch.device("meta"):  # no memory: parameter counts only
        sizes = {s: count_parameters(build_depth_estimator(s, input_size=112, random_init=True))
                 for s in ("dav2", "midas", "zoedepth")}
    assert 24e6 < sizes["dav2"] < 26e6  # Depth-Anything-V2-Small: 24.8M
    assert 330e6 < sizes["midas"] < 350e6  # DPT-Large: 343M
    assert 330e6 < sizes["zoedepth"] < 360e6  # ZoeDepth with BEiT-L: 345M


# --- bad weights folders ------------------------------------------------------------------------


def test_missing_folder_says_where_to_put_weights(tmp_path, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "depth"))
    with pytest.raises(DepthWeightsError, match=r"no dav2 depth weights in .*depth/dav2 \(the folder does not exist\)"
                                                r".*Depth-Anything-V2.*LAMP_BENCH_DEPTH_WEIGHTS"):
        build_depth_estimator("dav2")


def test_checkpoint_of_another_model_type(tmp_path):
    folder = saved(tmp_path, "midas", calibration=DisparityCalibration(1.0, 0.0))
    with pytest.raises(DepthWeightsError, match=r"model_type 'dpt', but depth source 'dav2' needs a 'depth_anything'"):
        build_depth_estimator("dav2", weights=folder)


def test_pickles_only_are_refused(tmp_path):
    folder = saved(tmp_path, "zoedepth")
    next(folder.glob("*.safetensors")).rename(folder / "pytorch_model.bin")
    with pytest.raises(DepthWeightsError, match=r"no \*\.safetensors.*pytorch_model\.bin.*never loaded"):
        build_depth_estimator("zoedepth", weights=folder)


def test_truncated_safetensors(tmp_path):
    folder = saved(tmp_path, "dav2")
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(DepthWeightsError, match=r"cannot load the dav2 weights"):
        build_depth_estimator("dav2", weights=folder)


def test_missing_and_unexpected_tensors_are_listed(tmp_path):
    folder = saved(tmp_path, "dav2")
    weights = next(folder.glob("*.safetensors"))
    state = load_file(str(weights))
    dropped = "head.conv3.weight"
    state["head.extra.weight"] = state.pop(dropped)
    save_file(state, str(weights), metadata={"format": "pt"})
    with pytest.raises(DepthWeightsError,
                       match=rf"missing tensors: \['{dropped}'\].*unexpected tensors: \['head.extra.weight'\]"):
        build_depth_estimator("dav2", weights=folder)


def test_mismatched_shapes(tmp_path):
    folder = saved(tmp_path, "dav2")
    weights = next(folder.glob("*.safetensors"))
    state = load_file(str(weights))
    state["head.conv3.weight"] = torch.zeros(1, 3, 1, 1)
    save_file(state, str(weights), metadata={"format": "pt"})
    with pytest.raises(DepthWeightsError, match=r"head\.conv3\.weight"):
        build_depth_estimator("dav2", weights=folder)


def test_relative_model_needs_a_calibration(tmp_path):
    folder = saved(tmp_path, "midas")
    with pytest.raises(DepthWeightsError,
                       match=r"relative-depth midas model.*depth_calibration\.json.*calibrate_from_demos"):
        build_depth_estimator("midas", weights=folder)
    (folder / CALIBRATION).write_text('{"disparity_scale": "x"}')
    with pytest.raises(DepthWeightsError, match=r"depth_calibration\.json: needs numbers"):
        build_depth_estimator("midas", weights=folder)


def test_calibration_from_demonstrations_recovers_the_cameras_affine_map(tmp_path):
    """Demo frames whose true depth is 1 / (0.7 d + 0.3) of the network's own disparity d: the fit must
    recover (0.7, 0.3), which it only does when it pairs each image with its depth map, the right way up."""
    from lamp_bench.models.training.demos import DemoWriter, Frame, TaskInfo

    torch.manual_seed(1)
    net = tiny_network("dav2", metric=False)
    with torch.no_grad():  # a random head whose disparity varies with the image (the default is near-constant)
        for name, p in net.named_parameters():
            if name.startswith("head."):
                p.normal_(0.0, 0.3)
    folder = tmp_path / "dav2"
    net.save_pretrained(folder)
    estimator = DepthEstimator("dav2", net, 56, None, IMAGENET_MEAN, IMAGENET_STD, False)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 56, 56, 3), dtype=np.uint8)
    with torch.no_grad():
        batch = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        disparity = estimator.network_output(batch)  # (5, 56, 56): already the images' size
    depth = (1.0 / (0.7 * disparity + 0.3)).numpy()
    k = np.array([[50.0, 0, 27.5], [0, 50.0, 27.5], [0, 0, 1]])
    frames = [Frame(action=np.zeros(7), images={"third_person": images[t]}, proprio=np.r_[np.zeros(6), 1.0, 0, 0],
                    depth={"third_person": depth[t]}, intrinsics={"third_person": k},
                    extrinsics={"third_person": np.eye(4)})
              for t in range(5)]
    demo = tmp_path / "demos" / "task_demo.hdf5"
    task = TaskInfo("libero_spatial", 0, "task", "do it", "libero_spatial")
    DemoWriter(demo, task, ("third_person",), 56).add(0, 0, True, frames)

    fit = calibrate_from_demos("dav2", folder, [demo], input_size=56, frames_per_demo=5)
    assert fit.scale == pytest.approx(0.7, rel=1e-4) and fit.shift == pytest.approx(0.3, rel=1e-4)
    loaded = build_depth_estimator("dav2", weights=folder, input_size=56)  # the saved calibration is used
    assert loaded.calibration == fit
    with torch.no_grad():
        assert torch.allclose(loaded(batch), torch.from_numpy(depth), rtol=1e-4)
