"""Sweep steps: [demos.*] and [train.*] before the cells (harness/sweep/steps.py, step_runs.py). Bad input
is one line at load; end to end (slow, ci) a toy sweep runs oracle demos -> tiny training -> evaluation
through the real local executor, survives a SIGKILL in the middle of training, blocks the cells of a
failed training, and every cell traces to its demonstrations (`lamp-bench lineage`)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from demo_data import needs_libero
from test_slurm import slurm_cluster  # noqa: F401  (the local Slurm cluster fixture)

from lamp_bench.harness.sweep import SweepError, load_sweep, only_tables, plan_sweep

CLI = [sys.executable, "-m", "lamp_bench.harness.cli"]

TOY = """
[sweep]
name = "toy-steps"
chunk_size = 4

[demos.toy]
suite = "libero_spatial"
tasks = [0]
episodes = 1
init_states = "20-22"
image_size = 64
cameras = ["third_person"]
kwargs = {{ render = "fast" }}

[train]
gpus = 0
time = "30"

[train.lamp]
preset = "tiny"
variant = "lamp"
data = "demos:toy"
stages = "both"
stage1_steps = 2
steps = 10
batch_size = 4
save_every = 2
log_every = 2
threads = 1
{select}

[train.broken]
preset = "tiny"
variant = "lamp"
data = "demos:toy"
stage1_steps = 1
steps = 1
init_checkpoint = "/nonexistent/checkpoint"

[policies.lamp]
checkpoint = "train:lamp"

[policies.broken]
policy = "lamp"
checkpoint = "train:broken"

[suites.libero_spatial]
tasks = [0]
episodes_per_task = {episodes}

[tables.toy]
policies = ["lamp", "broken"]
suites = ["libero_spatial"]
"""


def toy(tmp_path: Path, select: str = "", episodes: int = 1, extra: str = "", replace: tuple[str, str] | None = None) -> Path:
    text = TOY.format(select=select, episodes=episodes) + extra
    if replace:
        text = text.replace(*replace)
    path = tmp_path / "toy.toml"
    path.write_text(text)
    return path


def test_steps_load_and_cells_point_at_step_checkpoints(tmp_path):
    sweep = load_sweep(toy(tmp_path))
    assert sweep.steps.order == ("demos:toy", "train:lamp", "train:broken")
    assert sweep.steps.train["lamp"].options["policy"] == "lamp" and sweep.steps.resources.gpus == 0
    # LIBERO's demos and benchmark share init states: states 20-22 may be used, the cell evaluates 0
    assert sweep.steps.flags == ()
    plan = plan_sweep(sweep, tmp_path / "out")
    lamp = next(c for c in plan.cells if c.label == "lamp")
    assert lamp.policy_kwargs["checkpoint"] == str((tmp_path / "out" / "steps" / "train" / "lamp" / "checkpoint").resolve())
    flagged = load_sweep(toy(tmp_path, replace=('init_states = "20-22"', 'init_states = "0-2"')))
    assert any("not held out" in flag for flag in flagged.steps.flags)


@pytest.mark.parametrize("change, message", [
    (('checkpoint = "train:lamp"', 'checkpoint = "train:lmap"'), "'train:lmap' names no [train.lmap] step. Did you mean train:lamp?"),
    (('data = "demos:toy"\nstages', 'data = "demos:tyo"\nstages'), "'demos:tyo' names no [demos.tyo] step"),
    (('variant = "lamp"\ndata = "demos:toy"\nstages', 'variant = "lmap"\ndata = "demos:toy"\nstages'), "variant: 'lmap' is not a variant the trainer knows. Did you mean 'lamp'?"),
    (('init_checkpoint = "/nonexistent/checkpoint"', 'init_checkpoint = "train:broken"'), "training steps form a cycle"),
    (("steps = 10", "stepz = 10"), "unknown key; did you mean 'steps'?"),
    (("episodes = 1\n", "episodes = 0\n"), "episodes: must be a whole number >= 1"),
])
def test_bad_steps_are_one_line_at_load(tmp_path, change, message):
    with pytest.raises(SweepError) as caught:
        load_sweep(toy(tmp_path, replace=change))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_cycle_through_two_steps(tmp_path):
    extra = '\n[train.a]\ndata = "demos:toy"\ninit_checkpoint = "train:b"\n[train.b]\ndata = "demos:toy"\ninit_checkpoint = "train:a"\n'
    with pytest.raises(SweepError, match=r"train:a -> train:b -> train:a"):
        load_sweep(toy(tmp_path, extra=extra))


def test_selection_overlapping_evaluation_is_refused(tmp_path):
    select = 'select = {every = 5, init_states = "0-1"}'
    with pytest.raises(SweepError, match=r"evaluation init states 0 were used to select the checkpoint"):
        load_sweep(toy(tmp_path, select=select))
    load_sweep(toy(tmp_path, select='select = {every = 5, init_states = "10-11"}'))


OTHER_TABLE = """
[demos.other]
suite = "libero_spatial"
tasks = [0]
episodes = 1
init_states = "30-31"

[train.other]
data = "demos:other"

[policies.other]
policy = "lamp"
checkpoint = "train:other"

[tables.other]
policies = ["other"]
suites = ["libero_spatial"]
"""


def test_tables_option_runs_one_table_and_only_the_steps_it_needs(tmp_path):
    sweep = load_sweep(toy(tmp_path, extra=OTHER_TABLE))
    other = only_tables(sweep, ["other"])
    assert [c.name for c in other.cells()] == ["other/libero_spatial"]
    assert other.steps.order == ("demos:other", "train:other") and set(other.steps.train) == {"other"}
    assert only_tables(sweep, ["toy"]).steps.order == ("demos:toy", "train:lamp", "train:broken")
    run = subprocess.run([*CLI, "sweep", str(tmp_path / "toy.toml"), "--out", str(tmp_path / "out"), "--tables", "othr"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and not (tmp_path / "out").exists()
    assert "--tables othr: " in run.stderr and "(did you mean other?)" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def _state(out: Path) -> tuple[str, int]:
    for name in ("train_state", "train_state.old"):
        try:
            data = json.loads((out / "steps/train/lamp/run" / name / "state.json").read_text())
            return data.get("stage", ""), data.get("step", -1)
        except (OSError, ValueError):
            continue
    return "", -1


@needs_libero
@pytest.mark.slow
@pytest.mark.ci
def test_local_sweep_runs_steps_in_order_resumes_after_sigkill_and_traces_lineage(tmp_path, libero_assets):
    sweep_file = toy(tmp_path)
    out = tmp_path / "out"
    args = [*CLI, "sweep", str(sweep_file), "--out", str(out), "--executor", "local", "--workers", "1"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 900
    try:
        while time.time() < deadline and process.poll() is None and _state(out) < ("2", 4):
            time.sleep(0.2)
        assert process.poll() is None, "the sweep ended before training could be killed"
        os.killpg(process.pid, signal.SIGKILL)  # the sweep and its step process, mid-training
        process.wait()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    stage, killed_at = _state(out)
    assert stage == "2" and 4 <= killed_at < 10
    demos_state = json.loads((out / "steps/demos/toy/step.json").read_text())
    assert demos_state["status"] == "finished"
    assert not (out / "steps/train/lamp/checkpoint").exists()  # no checkpoint before the step finishes

    resumed = subprocess.run(args, capture_output=True, text=True, timeout=1200)
    # the broken training fails, so its cell is blocked and the sweep still evaluates the others
    assert json.loads((out / "steps/demos/toy/step.json").read_text())["started_at"] == demos_state["started_at"]
    train_state = json.loads((out / "steps/train/lamp/step.json").read_text())
    assert train_state["status"] == "finished", resumed.stderr[-2000:]
    with open(out / "steps/train/lamp/run/metrics.csv") as f:
        steps = [(row.split(",")[0], int(row.split(",")[1])) for row in f.read().splitlines()[1:]]
    assert steps == sorted(set(steps)) and steps[-1] == ("2", 10)  # resumed from its save: no step twice
    broken = json.loads((out / "steps/train/broken/step.json").read_text())
    assert broken["status"] == "failed" and broken["error"]
    status = subprocess.run([*CLI, "status", str(out)], capture_output=True, text=True)
    said = status.stderr + status.stdout
    assert "blocked by train:broken (failed)" in said and "cells: broken/libero_spatial" in said
    from lamp_bench.results.store import EpisodeStore

    records = EpisodeStore(out).records()
    assert {r["label"] for r in records} == {"lamp"}  # never evaluated on a missing or stale checkpoint
    lineage = subprocess.run([*CLI, "lineage", str(out), "--label", "lamp", "--suite", "libero_spatial", "--json"],
                             capture_output=True, text=True)
    assert lineage.returncode == 0, lineage.stderr
    (checkpoint,) = json.loads(lineage.stdout)["checkpoints"]
    assert checkpoint["status"] == "ok" and checkpoint["checkpoint_hash"] == train_state["result"]["checkpoint_hash"]
    assert checkpoint["collection"]["step"] == "demos:toy" and checkpoint["demo_set_hash"]
    assert checkpoint["collection"]["suite_kwargs"] == {"render": "fast"}  # the demos' suite options reached it
    assert checkpoint["on_demo_states"] == []  # evaluated on init state 0; the demos tried 20-22


@needs_libero
@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.slurm
def test_slurm_sweep_chains_steps_with_afterok_and_blocks_a_failed_training(tmp_path, libero_assets, slurm_cluster):
    """The real Slurm cluster: demos, then both trainings `afterok` on the demos job, the lamp cell's array
    `afterok` on its training; the broken training fails, its cell never runs; lineage traces the cell."""
    from lamp_bench.results.store import EpisodeStore

    sweep_file = toy(tmp_path)
    out = tmp_path / "out"
    result = subprocess.run([*CLI, "sweep", str(sweep_file), "--out", str(out), "--executor", "slurm",
                             "--gpus-per-node", "0", "--time", "30"], capture_output=True, text=True, timeout=1500)
    steps = {key: json.loads((out / "steps" / kind / name / "step.json").read_text())
             for key, kind, name in (("demos", "demos", "toy"), ("lamp", "train", "lamp"), ("broken", "train", "broken"))}
    assert steps["demos"]["status"] == "finished", result.stderr[-3000:]
    assert steps["lamp"]["after"] == [steps["demos"]["job_id"]] == steps["broken"]["after"]  # --dependency=afterok
    assert steps["lamp"]["status"] == "finished" and steps["broken"]["status"] == "failed"
    records = EpisodeStore(out).records()
    assert {r["label"] for r in records} == {"lamp"} and len(records) == 1
    lineage = subprocess.run([*CLI, "lineage", str(out), "--label", "lamp", "--suite", "libero_spatial", "--json"],
                             capture_output=True, text=True)
    (checkpoint,) = json.loads(lineage.stdout)["checkpoints"]
    assert checkpoint["status"] == "ok" and checkpoint["checkpoint_hash"] == steps["lamp"]["result"]["checkpoint_hash"]
    status = subprocess.run([*CLI, "status", str(out)], capture_output=True, text=True)
    assert "train:lamp" in status.stdout + status.stderr and "blocked by train:broken (failed)" in status.stdout + status.stderr


def test_local_steps_run_side_by_side_once_their_dependencies_finish(tmp_path, monkeypatch):
    """The local scheduler (step_runs._run_children) over real child processes that record when they ran:
    two independent demonstration sets overlap, each on half the cores; a training waits for both and, left
    alone at the end, gets every core; a failed step's dependent is blocked without running."""
    from lamp_bench.harness.sweep import step_runs
    from lamp_bench.harness.sweep.steps import DemoStep, StepGraph, TrainStep

    demos = {name: DemoStep(name, "libero_spatial", (0,), 1) for name in ("a", "b", "c")}
    train = {"after_ab": TrainStep("after_ab", ("a", "b"), {}), "after_c": TrainStep("after_c", ("c",), {})}
    child = ("import json, os, sys, time; started = time.time(); time.sleep(1.0); "
             "json.dump({'started': started, 'ended': time.time(), 'threads': os.environ.get('OMP_NUM_THREADS')}, "
             "open(sys.argv[1], 'w')); sys.exit(1 if sys.argv[2] == 'demos:c' else 0)")

    def start_child(key: str, out: Path, source: str):
        sink = open(tmp_path / f"{key.replace(':', '_')}.log", "ab")
        record = tmp_path / f"{key.replace(':', '_')}.json"
        return subprocess.Popen([sys.executable, "-c", child, str(record), key], stdout=sink, stderr=sink), sink

    monkeypatch.setattr(step_runs, "_start_child", start_child)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    graph = StepGraph(demos, train, ("demos:a", "demos:b", "train:after_ab"))
    assert not step_runs.run_steps(graph, tmp_path / "out", "local", "toy.toml", workers=2).blocked
    ran = {p.stem.replace("_", ":", 1): json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    a, b, after = ran["demos:a"], ran["demos:b"], ran["train:after_ab"]
    assert a["started"] < b["ended"] and b["started"] < a["ended"]  # side by side
    assert a["threads"] == b["threads"] == "1" and after["threads"] == "2"
    assert after["started"] >= max(a["ended"], b["ended"])

    graph = StepGraph(demos, train, ("demos:c", "train:after_c"))
    outcome = step_runs.run_steps(graph, tmp_path / "out", "local", "toy.toml", workers=2)
    assert not (tmp_path / "train_after_c.json").exists()  # never ran
    assert set(outcome.blocked) == {"demos:c", "train:after_c"}
    assert "demos:c did not finish" in outcome.blocked["train:after_c"]
    blocked_state = json.loads((tmp_path / "out/steps/train/after_c/step.json").read_text())
    assert blocked_state["status"] == "failed" and "demos:c" in blocked_state["error"]
