"""The trainer: config loading and bad input (before any training), a short run on real demonstration
steps (loss goes down, the checkpoint loads and acts), and resumption after a kill."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from demo_data import needs_libero, short_demo_file

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.registry import UnknownNameError
from lamp_bench.models.training.config import TrainConfig, build_train_config
from lamp_bench.models.training.demos import DemoFileError
from lamp_bench.models.training.loop import train
from lamp_bench.models.training.state import find_state as _find_state

# Small enough to run in seconds on 2 cores, big enough to memorise 16 steps.
# One torch thread: a reduction split over another thread count rounds differently, and the resume test
# compares a killed-and-resumed run with an uninterrupted one to 1e-4.
SHORT = dict(stage1_steps=4, stage2_steps=16, batch_size=8, warmup=0.1, log_every=2, save_every=4, lr=1e-3,
             progress=False, threads=1)


def test_config_file_and_command_line(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text('data = "demos"\nout = "ckpt"\npolicy = "ungated"\nstage2_steps = 7\nlambda_fm = 0.5\n')
    config = build_train_config(path, stage="2", out=tmp_path / "elsewhere")
    assert config == TrainConfig(data=("demos",), out=str(tmp_path / "elsewhere"), policy="ungated", stage="2",
                                 stage2_steps=7, lambda_fm=0.5)
    (tmp_path / "train.json").write_text(json.dumps({"data": ["a", "b"], "out": "o", "batch_size": 4}))
    assert build_train_config(tmp_path / "train.json").data == ("a", "b")


@pytest.mark.parametrize("options, error, message", [
    (dict(preset="tiny", data=["d"], out="o", policy="lampp"), UnknownNameError, "unknown policy 'lampp'. Did you mean 'lamp'"),
    (dict(preset="tiny", data=["d"], out="o", policy="oracle"), ConfigError, "'oracle' is not trained by lamp-bench"),
    (dict(preset="huge", data=["d"], out="o"), ValueError, "unknown model preset 'huge'"),
    (dict(preset="tiny", data=["d"], out="o", flow_source="optical"), UnknownNameError, "unknown scene-flow label source"),
    (dict(preset="tiny", data=["d"], out="o", stage="3"), ConfigError, "stage must be one of 1, 2, both"),
    (dict(preset="tiny", out="o"), ConfigError, "training needs --data DIR"),
    (dict(preset="tiny", data=["d"], out="o", batch_size=0), ConfigError, "batch_size must be >= 1"),
    (dict(preset="tiny", data=["d"], out="o", learning_rate=1.0), ConfigError, r"unknown keys \['learning_rate'\]"),
    (dict(preset="tiny", data=["d"], out="o", stage1_steps="many"), ConfigError, "stage1_steps: expected int"),
    (dict(preset="tiny", data=["d"], out="o", proprio="yes"), ConfigError, "proprio: expected bool"),
])
def test_bad_configs_fail_before_training(options, error, message):
    with pytest.raises(error, match=message):
        build_train_config(**options)


def test_bad_data_fails_before_training(tmp_path):
    with pytest.raises(DemoFileError, match="demonstration folder .*missing does not exist"):
        train(build_train_config(preset="tiny", data=[str(tmp_path / "missing")], out=str(tmp_path / "o")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DemoFileError, match="no \\*.hdf5 demonstration files under"):
        train(build_train_config(preset="tiny", data=[str(tmp_path / "empty")], out=str(tmp_path / "o")))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x_demo.hdf5").write_bytes(b"\x89HDF garbage")
    with pytest.raises(DemoFileError, match="x_demo.hdf5 is not a readable HDF5 file"):
        train(build_train_config(preset="tiny", data=[str(tmp_path / "bad")], out=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()  # nothing was written


def _saved(out: Path) -> tuple[str, int]:
    """(stage, step) of the resumable state in `out`, ("", -1) while there is none."""
    folder = _find_state(out)
    try:
        state = json.loads((folder / "state.json").read_text())
        return state["stage"], state["step"]
    except (TypeError, OSError, ValueError, KeyError):  # none yet, or swapped while reading
        return "", -1


def _losses(out: Path) -> list[tuple[str, int, float]]:
    with open(out / "metrics.csv") as f:
        return [(r["stage"], int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    train(build_train_config(preset="tiny", data=[str(short_demo_file().parent)], out=str(out), **SHORT))
    return out


@needs_libero
@pytest.mark.slow
@pytest.mark.ci
def test_short_training_lowers_the_loss_and_the_checkpoint_acts(trained):
    from lamp_bench.harness.policy import Observation, Task
    from lamp_bench.harness.registry import POLICIES, load_builtin_entries
    from lamp_bench.models.training.demos import DemoReader, inspect_demo_file

    losses = _losses(trained)
    stage1 = [loss for stage, _, loss in losses if stage == "1"]
    stage2 = [loss for stage, _, loss in losses if stage == "2"]
    assert len(stage1) == 2 and len(stage2) == 8
    assert np.mean(stage2[-2:]) < 0.85 * np.mean(stage2[:2])  # memorising 16 steps
    statistics = json.loads((trained / "dataset_statistics.json").read_text())
    assert statistics["libero_spatial"]["gripper"] == "canonical"
    assert len(statistics["libero_spatial"]["proprio"]["q01"]) == 5  # the tiny preset's proprioception token
    assert (trained / "train_state" / "state.json").is_file() and not (trained / "train_state" / "model.safetensors").exists()

    load_builtin_entries()
    policy = POLICIES.build("lamp", checkpoint=str(trained))
    info = inspect_demo_file(short_demo_file())
    reader = DemoReader(info)
    k, e = reader.camera(0)
    gripper, position, quaternion = np.split(reader.demo(0)["robot_states"][3], [2, 5])  # LIBERO's order
    obs = Observation(info.instruction, images={"third_person": reader.rgb(0, 3, "third_person")},
                      depth={"third_person": reader.depth(0, 3)}, intrinsics={"third_person": k[3]},
                      extrinsics={"third_person": e[3]}, proprio=np.r_[position, quaternion, gripper])
    policy.reset([Task("libero_spatial", 0, "t", info.instruction, dataset="libero_spatial")], [0])
    action = policy.act([obs])
    assert action.shape == (1, 7) and np.all(np.abs(action) <= 1) and abs(action[0, 6]) > 0.99  # a gripper bin centre
    # Fine-tuning keeps the checkpoint's architecture: asking for another is an error before any work.
    never = trained.parent / "never"
    with pytest.raises(ConfigError, match="proprio = False differs from the init checkpoint's architecture"):
        train(build_train_config(data=[str(short_demo_file().parent)], out=str(never), init_checkpoint=str(trained),
                                 proprio=False, **SHORT))
    assert not never.exists()
    # A re-run of a finished training does nothing and returns the checkpoint.
    before = (trained / "model.safetensors").stat().st_mtime_ns
    assert train(build_train_config(preset="tiny", data=[str(short_demo_file().parent)], out=str(trained), **SHORT)) == trained
    assert (trained / "model.safetensors").stat().st_mtime_ns == before


@needs_libero
@pytest.mark.slow
@pytest.mark.ci
def test_killed_training_resumes_from_its_last_state_and_matches(trained, tmp_path):
    data = str(short_demo_file().parent)
    out = tmp_path / "killed"
    code = ("from lamp_bench.models.training.config import build_train_config; "
            "from lamp_bench.models.training.loop import train; "
            f"train(build_train_config(preset='tiny', data=[{data!r}], out={str(out)!r}, **{SHORT!r}))")
    process = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 600
    try:
        while time.time() < deadline and process.poll() is None:
            if _saved(out) >= ("2", 4):
                break
            time.sleep(0.2)
        assert process.poll() is None, "training ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    stage, killed_at = _saved(out)
    assert stage == "2" and 4 <= killed_at < SHORT["stage2_steps"]
    train(build_train_config(preset="tiny", data=[data], out=str(out), **SHORT))
    # Same data order and noise after the restart: the metrics equal those of the uninterrupted run.
    resumed, uninterrupted = _losses(out), _losses(trained)
    assert [r[:2] for r in resumed] == [r[:2] for r in uninterrupted]
    assert [r[2] for r in resumed] == pytest.approx([r[2] for r in uninterrupted], rel=1e-4)


def test_shift_augmentation_keeps_pixels_points_and_flow_together():
    """After a random shift, each patch centre still lifts to the scene point whose features it sees and
    carries that point's flow label."""
    import torch
    from lamp_bench.models.training.dataset import patch_centres
    from lamp_bench.models.lamp.model import Batch
    from lamp_bench.models.lamp.lifting import PointLifter
    from lamp_bench.models.training.steps import shift_augment

    size, patch, b = 32, 8, 3
    g = torch.Generator().manual_seed(0)
    v, u = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    depth = (1.0 + 0.01 * u + 0.02 * v).expand(b, size, size)  # a smooth slanted surface
    k = torch.tensor([[-40.0, 0, 15.5], [0, 40.0, 15.5], [0, 0, 1]]).expand(b, 3, 3)  # mirrored, as LIBERO's
    rays = torch.linalg.solve(k[0], torch.stack([u, v, torch.ones_like(u)]).view(3, -1)).T.view(size, size, 3)
    dense_flow = (rays * depth[0, ..., None] * torch.tensor([0.1, -0.2, 0.3])).reshape(1, -1, 3).expand(b, -1, -1)
    images = torch.rand(b, 3, size, size, generator=g)
    batch = Batch(images=images, prompt_ids=[[1]] * b, instruction_ids=[[5]] * b, actions=torch.zeros(b, 7),
                  depth=depth.clone(), intrinsics=k.clone(), flow=dense_flow.clone())
    out = shift_augment(batch, 3, patch, torch.Generator().manual_seed(1))
    lifter = PointLifter(size, patch)
    points = lifter(out.depth, out.intrinsics)  # (B, Np, 3)
    centres = torch.as_tensor(patch_centres(size, patch), dtype=torch.float32)
    for i in range(b):
        shift = next((dx, dy) for dy in range(-3, 4) for dx in range(-3, 4)
                     if torch.equal(out.images[i, :, 8:24, 8:24], images[i, :, 8 - dy:24 - dy, 8 - dx:24 - dx]))
        source = centres - torch.tensor(shift, dtype=torch.float32)  # where each centre's content came from
        inside = ((source >= 0) & (source <= size - 1)).all(1)
        r, c = source[inside, 1].long(), source[inside, 0].long()  # centres sit between pixels: check the 3D point
        expected = torch.stack([(rays * depth[0, ..., None])[rr:rr + 2, cc:cc + 2].reshape(4, 3).mean(0)
                                for rr, cc in zip(r.tolist(), c.tolist())])
        assert torch.allclose(points[i][inside], expected, atol=2e-3)
        assert torch.allclose(out.flow[i][inside], expected * torch.tensor([0.1, -0.2, 0.3]), atol=1e-3)
