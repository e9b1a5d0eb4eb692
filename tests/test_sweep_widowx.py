"""The SimplerEnv-WidowX table from one sweep (slow, ci): oracle demonstrations on real ManiSkill3, a tiny
model trained on them with ICP scene-flow labels (ManiSkill gives no per-body poses), held-out evaluation
under a label of its own, its lineage, and the report's SimplerEnv section."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lamp_bench.harness.config import MANISKILL_ASSETS_ENV

CLI = [sys.executable, "-m", "lamp_bench.harness.cli"]
ASSETS = Path(os.environ.get(MANISKILL_ASSETS_ENV) or Path(__file__).resolve().parents[2] / "shared" / "assets" / "maniskill")
CARROT = 1

TOY = f"""
[sweep]
name = "toy-widowx"

[demos.widowx]
suite = "simpler_widowx"
tasks = [{CARROT}]
episodes = 1
init_states = "10-23"
noise = 0.1
image_size = 64
cameras = ["third_person"]

[train]
gpus = 0

[train.lamp_widowx]
preset = "tiny"
variant = "lamp"
data = "demos:widowx"
flow_source = "icp"
stage1_steps = 2
steps = 4
batch_size = 4
threads = 1

[policies.lamp-widowx]
policy = "lamp"
checkpoint = "train:lamp_widowx"

[suites.simpler_widowx]
tasks = [{CARROT}]
episodes_per_task = 1

[tables.simpler_widowx]
policies = ["lamp-widowx"]
suites = ["simpler_widowx"]
"""


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.maniskill
@pytest.mark.skipif(not (ASSETS / "data" / "tasks").is_dir(), reason=f"no ManiSkill asset pack at {ASSETS}")
def test_widowx_demos_train_and_evaluate_under_their_own_label(tmp_path, monkeypatch):
    monkeypatch.setenv(MANISKILL_ASSETS_ENV, str(ASSETS))  # the sweep's step and job processes inherit it
    sweep_file = tmp_path / "toy.toml"
    sweep_file.write_text(TOY)
    out = tmp_path / "out"
    run = subprocess.run([*CLI, "sweep", str(sweep_file), "--out", str(out), "--executor", "local", "--workers", "1"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    demos = json.loads((out / "steps/demos/widowx/step.json").read_text())
    assert demos["status"] == "finished" and demos["result"]["demos"] == 1
    lineage = json.loads((out / "steps/train/lamp_widowx/checkpoint/lineage.json").read_text())
    assert lineage["data"]["suites"] == ["simpler_widowx"] and lineage["training_config"]["flow_source"] == "icp"
    (demo_file,) = lineage["data"]["files"]
    assert demo_file["init_states"][0] >= 10  # the demonstrations never saw the evaluated configuration 0
    from lamp_bench.results.store import EpisodeStore

    (record,) = EpisodeStore(out).records()
    assert (record["label"], record["suite"], record["task_id"], record["init_index"]) == \
        ("lamp-widowx", "simpler_widowx", CARROT, 0)
    assert record["steps"] == 60 and record["checkpoint_hash"] == lineage["checkpoint_hash"]
    chain = subprocess.run([*CLI, "lineage", str(out), "--label", "lamp-widowx", "--suite", "simpler_widowx", "--json"],
                           capture_output=True, text=True)
    assert chain.returncode == 0, chain.stderr
    (checkpoint,) = json.loads(chain.stdout)["checkpoints"]
    assert checkpoint["status"] == "ok" and checkpoint["on_demo_states"] == []
    report = subprocess.run([*CLI, "report", str(out), "--out", str(tmp_path / "report"), "--format", "md"],
                            capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## SimplerEnv-WidowX" in text and "| lamp-widowx |" in text
