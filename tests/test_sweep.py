"""Sweep files: schema, validation messages, expansion into cells and jobs, status bookkeeping."""
from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from checkpoints import paper_configs, write_checkpoints

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.sweep import (
    SweepError, load_sweep, plan_sweep, read_plan, run_sweep, sweep_status, write_plan,
)

REPO = Path(__file__).resolve().parent.parent
SWEEPS = REPO / "sweeps"


@pytest.fixture
def ckpt_dir(tmp_path, monkeypatch):
    write_checkpoints(tmp_path / "ckpt", paper_configs())  # real folders: sweeps check them at load
    monkeypatch.setenv("CKPT_DIR", str(tmp_path / "ckpt"))
    return tmp_path / "ckpt"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def test_paper_sweep_holds_every_table_of_the_paper(ckpt_dir):
    sweep = load_sweep(SWEEPS / "paper.toml")
    assert list(sweep.tables) == ["libero", "libero_plus", "simpler_widowx", "ablation_steps",
                                  "ablation_cross_attention",
                                  "ablation_depth"]
    cells = {c.name: c for c in sweep.cells()}
    libero = ["libero_spatial", "libero_object", "libero_goal", "libero_10"]
    for label in ("lamp", "openvla"):
        assert all(f"{label}/{s}" in cells for s in libero + ["libero_plus", "simpler_widowx"])
    for label in ("no-motion", "steps-1", "steps-5", "steps-10"):
        assert all(f"{label}/{s}" in cells for s in libero + ["libero_plus"])
    for label in ("ungated", "midas", "zoedepth", "dav2"):
        assert all(f"{label}/{s}" in cells for s in libero)
    assert len(cells) == 48  # shared cells (lamp and no-motion on LIBERO) run once
    assert cells["lamp/libero_spatial"].tables == ("libero", "ablation_cross_attention")
    assert cells["lamp/libero_spatial"].episodes_per_task == 50
    assert cells["lamp/libero_plus"].episodes_per_task == 1 and cells["lamp/libero_plus"].chunk_size == 500
    assert cells["steps-5/libero_goal"].policy_kwargs == {"device": "cuda", "checkpoint": str(ckpt_dir / "lamp")}
    assert cells["ungated/libero_10"].policy_kwargs["checkpoint"] == str(ckpt_dir / "ungated")
    assert {c.chunk_size for c in sweep.cells(chunk_size=7)} == {7}


def test_paper_sweep_runs_the_tables_the_report_lays_out(ckpt_dir):
    """One definition of the paper's tables (results.paper): the sweep's and the report's agree."""
    from lamp_bench.reports.layouts import ABLATIONS
    from lamp_bench.results.paper import PAPER_TABLES

    sweep = load_sweep(SWEEPS / "paper.toml")
    assert {k: (t.policies, t.suites, t.description) for k, t in sweep.tables.items()} == \
           {k: (t.policies, t.suites, t.description) for k, t in PAPER_TABLES.items()}
    assert [a[0] for a in ABLATIONS] == ["ablation_steps", "ablation_cross_attention", "ablation_depth"]
    assert {a[0] for a in ABLATIONS} <= set(sweep.tables)


def test_paper_sweep_needs_its_checkpoint_folder(monkeypatch):
    monkeypatch.delenv("CKPT_DIR", raising=False)
    with pytest.raises(SweepError, match=r"paper.toml: \[policies.lamp\] checkpoint: environment variable CKPT_DIR "
                                         r"is not set"):
        load_sweep(SWEEPS / "paper.toml")
    monkeypatch.setenv("CKPT_DIR", "/nonexistent/ckpts")
    with pytest.raises(SweepError, match=r"\[policies.lamp\] checkpoint: /nonexistent/ckpts/lamp \(from "
                                         r"'\$\{CKPT_DIR\}/lamp'\) is not a directory"):
        load_sweep(SWEEPS / "paper.toml")
    assert len(load_sweep(SWEEPS / "paper.toml", check_checkpoints=False).cells()) == 48


BASE = """
[policies.noop]
[suites.libero_spatial]
[tables.t]
policies = ["noop"]
suites = ["libero_spatial"]
"""


@pytest.mark.parametrize("text, message", [
    ("[sweep]\nchunksize = 3\n" + BASE, r"\[sweep\] chunksize: unknown key; did you mean 'chunk_size'\?"),
    ("[sweep]\nchunk_size = 0\n" + BASE, r"\[sweep\] chunk_size: must be >= 1, got 0"),
    ("[sweep]\nchunk_size = '3'\n" + BASE, r"\[sweep\] chunk_size: expected int, got str '3'"),
    (BASE + "[policies.x]\npolicy = 'lamb'\n", r"\[policies.x\] policy: unknown policy 'lamb'. Did you mean 'lamp'\?"),
    (BASE + "[suites.s]\nsuite = 'libero_spatail'\n", r"\[suites.s\] suite: unknown suite 'libero_spatail'"),
    (BASE + "[suites.s]\nsuite = 'libero_goal'\ntasks = 'one'\n", r"\[suites.s\] tasks: tasks expects ids like"),
    (BASE + "[suites.s]\nsuite = 'libero_goal'\ntasks = [1, 1]\n", r"\[suites.s\] tasks: task ids must be distinct"),
    (BASE + "[suites.s]\nsuite = 'libero_goal'\nseed = 1\nseeds = [2]\n", r"\[suites.s\] seed: set either"),
    (BASE + "[suites.s]\nsuite = 'libero_goal'\nseeds = []\n", r"\[suites.s\] seeds: expected a non-empty list"),
    (BASE + "[suites.s]\nsuite = 'libero_goal'\nepisodes = 3\n",
     r"\[suites.s\] episodes: unknown key; did you mean 'episodes_per_task'\?"),
    (BASE + "[tables.u]\npolicies = ['nop']\nsuites = ['libero_spatial']\n",
     r"\[tables.u\] policies: 'nop' is not defined in this file \(no \[policies.nop\] table\). Did you mean 'noop'\?"),
    (BASE + "[tables.u]\npolicies = ['noop']\n", r"\[tables.u\] suites: missing"),
    (BASE + "[tables.u]\npolicies = ['noop']\nsuites = ['libero_spatial']\nenvs_per_worker = 2\n",
     r"\[tables.u\] envs_per_worker: unknown key"),
    (BASE + "[policies.x]\npolicy = 'noop'\nkwargs = { root = '${LAMP_TEST_UNSET_VAR}' }\n",
     r"\[policies.x\] kwargs.root: environment variable LAMP_TEST_UNSET_VAR is not set"),
    (BASE + "[policies.'a b']\npolicy = 'noop'\n", r"\[policies.a b\]: a label may hold"),
    ("[policies.noop]\n", r"\[top level\] tables: the sweep defines no"),
    ("[tables]\nx = 1\n" + "", r"\[tables.x\]: must be a table"),
    ("policies = 3\n", r"\[top level\] policies: must be a table"),
    ("[sweep\n", r"not valid TOML"),
    (BASE + "[tables.mine]\npaper = true\n", r"\[tables.mine\] paper: 'mine' is not a table of the paper"),
    (BASE + "[tables.libero]\npaper = true\npolicies = ['noop']\n",
     r"\[tables.libero\] policies: a paper table takes its policies and suites from lamp_bench.results.paper"),
    (BASE + "[tables.u]\npolicies = ['noop']\nsuites = ['libero_spatial']\nepisodes_per_task = 3\n",
     r"\[tables.u\] runs 'noop' on 'libero_spatial' with other episodes_per_task than \[tables.t\]"),
])
def test_errors_name_file_table_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(SweepError, match=message) as error:
        load_sweep(path)
    assert str(error.value).startswith(str(path))


def test_settings_resolve_table_over_suite_over_sweep(tmp_path):
    sweep = load_sweep(write(tmp_path, """
[sweep]
seeds = [0, 1]
chunk_size = 5
envs_per_worker = 2
[policies.noop]
[policies.still]
policy = "noop"
kwargs = { cameras = [] }
[suites.libero_spatial]
tasks = "0-2,5"
episodes_per_task = 4
chunk_size = 3
[suites.goal]
suite = "libero_goal"
seed = 7
[tables.a]
policies = ["noop", "still"]
suites = ["libero_spatial"]
[tables.b]
policies = ["noop"]
suites = ["goal"]
tasks = [1]
episodes_per_task = 2
"""))
    cells = {c.name: c for c in sweep.cells()}
    spatial, goal = cells["noop/libero_spatial"], cells["noop/libero_goal"]
    assert (spatial.tasks, spatial.episodes_per_task, spatial.seeds, spatial.chunk_size, spatial.envs_per_worker) == \
           ((0, 1, 2, 5), 4, (0, 1), 3, 2)
    assert (goal.tasks, goal.episodes_per_task, goal.seeds, goal.chunk_size) == ((1,), 2, (7,), 5)
    assert cells["still/libero_spatial"].policy == "noop"
    assert cells["still/libero_spatial"].policy_kwargs == {"cameras": []}


def test_plan_is_deterministic_and_cut_into_chunks(tmp_path, libero_assets):
    path = write(tmp_path, """
[policies.noop]
[suites.libero_spatial]
tasks = [0, 1, 2]
episodes_per_task = 3
seeds = [0, 1]
[tables.t]
policies = ["noop"]
suites = ["libero_spatial"]
""")
    plan = plan_sweep(load_sweep(path), tmp_path / "out", chunk_size=4)
    episodes = [e for j in plan.jobs for e in j.spec.episodes]
    assert len(episodes) == len(set(episodes)) == 18
    assert sorted((e.task_id, e.init_index, e.seed) for e in episodes) == \
           sorted((t, i, s) for t in range(3) for i in range(3) for s in (0, 1))
    assert [len(j.spec.episodes) for j in plan.jobs] == [4, 4, 4, 3, 3]
    again = plan_sweep(load_sweep(path), tmp_path / "out", chunk_size=4)
    assert [j.key for j in again.jobs] == [j.key for j in plan.jobs]
    assert len({j.key for j in plan.jobs}) == 5
    write_plan(plan)
    read = read_plan(tmp_path / "out")
    assert [(j.key, j.spec.episodes, j.spec.label) for j in read.jobs] == \
           [(j.key, j.spec.episodes, j.spec.label) for j in plan.jobs]
    assert read.cells == plan.cells


def test_plan_reports_a_task_the_suite_does_not_have(tmp_path, libero_assets):
    path = write(tmp_path, BASE.replace("[suites.libero_spatial]", "[suites.libero_spatial]\ntasks = [42]"))
    with pytest.raises(SweepError, match=r"cell noop/libero_spatial \(tables t\): suite 'libero_spatial' has tasks "
                                         r"0..9; got task id 42"):
        plan_sweep(load_sweep(path), tmp_path / "out")


def test_executor_choice_is_checked(tmp_path, libero_assets):
    plan = plan_sweep(load_sweep(write(tmp_path, BASE)), tmp_path / "out")
    with pytest.raises(ConfigError, match="--executor must be one of inline, local, slurm"):
        run_sweep(plan, "ray")
    with pytest.raises(ConfigError, match="--detach needs --executor slurm"):
        run_sweep(plan, "local", detach=True)


STATUS = """
[policies.noop]
kwargs = { cameras = [] }
[policies.oracle]
[suites.libero_spatial]
tasks = [0]
episodes_per_task = 2
chunk_size = 1
[tables.t]
policies = ["noop", "oracle"]
suites = ["libero_spatial"]
"""


@pytest.mark.slow
def test_status_from_a_fresh_process_tells_done_running_and_pending(tmp_path, libero_assets):
    out = tmp_path / "out"
    plan = plan_sweep(load_sweep(write(tmp_path, STATUS)), out)
    noop_plan = plan_sweep(load_sweep(write(tmp_path, STATUS)), out)
    noop_plan.jobs = [j for j in noop_plan.jobs if j.spec.run_label == "noop"]
    assert run_sweep(noop_plan, "inline").failures == []
    write_plan(plan)  # the whole sweep: the oracle's two jobs have not run

    oracle_job = next(j for j in plan.jobs if j.spec.run_label == "oracle")
    code = ("import pickle, sys; from lamp_bench.harness.sweep import TrackedJob; "
            "spec = pickle.loads(sys.stdin.buffer.read()); TrackedJob(spec.results_dir)(spec)")
    worker = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    worker.stdin.write(pickle.dumps(oracle_job.spec))
    worker.stdin.close()
    marker = out / "jobs" / "workers" / f"{oracle_job.key}.json"
    try:
        deadline = time.monotonic() + 60
        while not (marker.exists() and json.loads(marker.read_text())["state"] == "running"):
            assert time.monotonic() < deadline and worker.poll() is None
            time.sleep(0.1)
        status = fresh_status(out)
        assert status["noop"] == dict(total=2, done=2, running=0, failed=0, pending=0, successes=0)
        assert status["oracle"] == dict(total=2, done=0, running=1, failed=0, pending=1, successes=0)
    finally:
        worker.send_signal(signal.SIGKILL)  # a worker killed mid-episode: its marker says running
        worker.wait()
    assert json.loads(marker.read_text())["state"] == "running"
    assert fresh_status(out)["oracle"] == dict(total=2, done=0, running=0, failed=0, pending=2, successes=0)


def fresh_status(out: Path) -> dict[str, dict]:
    code = ("import json, sys; from lamp_bench.harness.sweep import sweep_status; "
            "print(json.dumps({c.label: dict(total=c.total, done=c.done, running=c.running, failed=c.failed, "
            "pending=c.pending, successes=c.successes) for c in sweep_status(sys.argv[1])}))")
    result = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def test_status_of_a_directory_without_a_sweep(tmp_path):
    with pytest.raises(ConfigError, match="holds no sweep plan"):
        sweep_status(tmp_path)


def test_tracked_job_records_a_failure(tmp_path, libero_assets):
    """A job that raises (here: a policy argument the policy does not take) leaves a failed state file
    and a failed ledger entry that `status` reports, and the sweep goes on with the next job."""
    path = write(tmp_path, STATUS.replace("kwargs = { cameras = [] }", "kwargs = { wheels = 4 }"))
    plan = plan_sweep(load_sweep(path), tmp_path / "out")
    plan.jobs = [j for j in plan.jobs if j.spec.run_label == "noop"]
    result = run_sweep(plan, "inline")
    assert len(result.failures) == 2 and "wheels" in result.failures[0]
    status = {c.label: c for c in sweep_status(tmp_path / "out")}
    assert (status["noop"].failed, status["noop"].pending) == (2, 0)
    assert "wheels" in status["noop"].errors[0]
    states = [json.loads(p.read_text())["state"] for p in (tmp_path / "out" / "jobs" / "workers").glob("*.json")]
    assert states == ["failed", "failed"]
