"""The Slurm executor against a real one-node Slurm cluster (.ci/slurm.sh), on real LIBERO episodes
of the fast `oracle` and `noop` policies: a job array gives exactly what the inline executor gives,
also when jobs are cancelled, requeued or signalled mid-run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lamp_bench.harness.slurm import SlurmError, SlurmOptions
from lamp_bench.harness.sweep import load_sweep, plan_sweep, run_sweep, sweep_status
from lamp_bench.results.store import EpisodeStore, record_key

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "sweeps" / "smoke.toml"
SLURM_SH = REPO / ".ci" / "slurm.sh"

pytestmark = pytest.mark.slurm

FAULT_SWEEP = """
[sweep]
name = "faults"
[policies.noop_a]
policy = "noop"
kwargs = { cameras = [] }
[policies.noop_b]
policy = "noop"
kwargs = { cameras = [] }
[suites.libero_spatial]
tasks = [0, 1]
episodes_per_task = 2
[tables.faults]
policies = ["noop_a", "noop_b"]
suites = ["libero_spatial"]
"""

# A CPU cluster, fast polling, short grace: keeps each test around a minute on 2 cores.
OPTIONS = dict(gpus_per_node=0, time="30", poll_s=1.0, grace_s=3.0, signal_delay_s=60)


@pytest.fixture(scope="session")
def slurm_cluster():
    """The local test cluster: started by this fixture when it is not running (and stopped after)."""
    missing = [b for b in ("slurmctld", "slurmd", "munged", "sbatch", "squeue") if shutil.which(b) is None
               and not Path("/usr/sbin", b).exists()]
    if missing:
        pytest.skip(f"Slurm is not installed (no {', '.join(missing)}): "
                    "apt-get install -y slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        pytest.skip("the local Slurm test cluster needs root (.ci/slurm.sh start)")
    env = subprocess.run(["bash", str(SLURM_SH), "env"], capture_output=True, text=True, check=True).stdout
    os.environ["SLURM_CONF"] = env.strip().split("=", 1)[1]
    running = subprocess.run(["bash", str(SLURM_SH), "status"], capture_output=True).returncode == 0
    if not running:
        subprocess.run(["bash", str(SLURM_SH), "start"], check=True, capture_output=True)
    yield os.environ["SLURM_CONF"]
    if not running:
        subprocess.run(["bash", str(SLURM_SH), "stop"], check=True, capture_output=True)


def outcomes(out: Path) -> dict[tuple, tuple]:
    return {record_key(r): (r["status"], r["success"], r["steps"]) for r in EpisodeStore(out).records()}


def assert_exact(out: Path, expected: set[tuple]) -> None:
    """Every planned episode once: none lost, none recorded twice (raw shard lines, not deduplicated)."""
    raw = [record_key(r) for r in EpisodeStore(out).iter_raw()]
    assert sorted(raw) == sorted(expected), "lost or duplicated episodes"


def planned_keys(plan) -> set[tuple]:
    return {(j.spec.run_label, e.suite, e.task_id, e.init_index, e.seed) for j in plan.jobs for e in j.spec.episodes}


def wait_for(condition, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def running_workers(out: Path) -> list[dict]:
    found = []
    for path in (out / "jobs" / "workers").glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, FileNotFoundError):
            continue
        if data["state"] == "running":
            found.append(data)
    return found


def squeue_state(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%T", "-j", job_id],
                          capture_output=True, text=True).stdout.strip()


@pytest.mark.slow
@pytest.mark.ci
def test_job_array_matches_inline_and_resumes_detached(slurm_cluster, libero_assets, tmp_path):
    sweep = load_sweep(SMOKE)
    inline_plan = plan_sweep(sweep, tmp_path / "inline")
    run_sweep(inline_plan, "inline")

    plan = plan_sweep(sweep, tmp_path / "slurm")
    submitted = run_sweep(plan, "slurm", slurm=SlurmOptions(**OPTIONS), detach=True)
    assert submitted.detached and submitted.started == len(plan.jobs) == 4
    # A fresh process follows the detached sweep from the files in <out>/jobs and squeue alone.
    status = subprocess.run(
        [sys.executable, "-c", "import json, sys, dataclasses; from lamp_bench.harness.sweep import sweep_status; "
         "print(json.dumps([dataclasses.asdict(c) for c in sweep_status(sys.argv[1])]))", str(tmp_path / "slurm")],
        capture_output=True, text=True, check=True)
    cells = json.loads(status.stdout)
    assert [(c["label"], c["total"]) for c in cells] == [("oracle", 4), ("noop", 4)]
    assert all(c["done"] + c["running"] + c["pending"] == 4 and c["failed"] == 0 for c in cells)
    assert sum(c["done"] for c in cells) < 8, "status was taken before the jobs could finish"

    # Running the sweep again follows the queued jobs instead of submitting them twice.
    resumed = run_sweep(plan, "slurm", slurm=SlurmOptions(**OPTIONS))
    assert resumed.failures == [] and resumed.started == 0 and resumed.adopted == 4
    assert_exact(tmp_path / "slurm", planned_keys(plan))
    assert outcomes(tmp_path / "slurm") == outcomes(tmp_path / "inline")
    assert [(c.done, c.successes) for c in sweep_status(tmp_path / "slurm")] == [(4, 4), (4, 0)]


@pytest.mark.slow
@pytest.mark.ci
def test_killed_and_requeued_jobs_end_in_an_exact_set(slurm_cluster, libero_assets, tmp_path):
    """One running job is killed outright, as an OOM kill or a lost node would (the executor resubmits
    its unfinished episodes); another is requeued by `scontrol requeue` (Slurm restarts it; it skips
    what the store holds). A plain `scancel` would not do for the first: submitit ignores SIGTERM and a
    fast machine finishes the chunk within Slurm's KillWait."""
    out = tmp_path / "faults"
    # Two noop cells, not the smoke sweep's oracle: an oracle episode can end in a second, so its job
    # could finish its chunk between "one episode recorded" and the kill. A noop episode runs its full
    # 220 steps (about 5 s here), which leaves each job three episodes (over 15 s) to go at the kill.
    sweep_file = tmp_path / "faults.toml"
    sweep_file.write_text(FAULT_SWEEP)
    plan = plan_sweep(load_sweep(sweep_file), out, chunk_size=4)  # 2 jobs of 4 episodes, both running at once
    result: dict = {}
    driver = threading.Thread(target=lambda: result.update(
        r=run_sweep(plan, "slurm", slurm=SlurmOptions(**OPTIONS))))
    driver.start()
    store = EpisodeStore(out)

    def both_under_way():
        workers = running_workers(out)
        labels = {r["label"] for r in store.iter_raw()}
        return len(workers) == 2 and all(w["label"] in labels for w in workers) and workers

    workers = wait_for(both_under_way, what="both jobs running, each with an episode recorded")
    killed, requeued = sorted(w["slurm_job_id"] for w in workers)
    subprocess.run(["scancel", "--signal=KILL", "--full", killed], check=True)
    subprocess.run(["scontrol", "requeue", requeued], check=True)
    driver.join(timeout=600)
    assert not driver.is_alive()
    assert result["r"].failures == []
    assert_exact(out, planned_keys(plan))

    ledger = json.loads((out / "jobs" / "submissions.json").read_text())
    by_id = {e["job_id"]: e for e in ledger}
    assert by_id[killed]["outcome"] == "died" and "episodes unfinished" in by_id[killed]["error"]
    retries = [e for e in ledger if e["attempt"] == 1]
    assert len(retries) == 1 and retries[0]["label"] == by_id[killed]["label"]
    assert len(retries[0]["episodes"]) < 4, "the retry runs only the unfinished episodes"
    assert by_id[requeued]["outcome"] == "finished"
    worker = next(json.loads(p.read_text()) for p in (out / "jobs" / "workers").glob("*.json")
                  if json.loads(p.read_text())["slurm_job_id"] == requeued)
    assert worker["restarts"] >= 1 and worker["outcome"]["skipped"] >= 1


@pytest.mark.slow
def test_usr2_finishes_the_running_episode_then_requeues(slurm_cluster, libero_assets, tmp_path):
    """The time-limit / preemption signal: the episode under way is finished and recorded, no new one
    starts, the job requeues itself and the restarted job runs only the rest."""
    out = tmp_path / "usr2"
    sweep = load_sweep(SMOKE)
    plan = plan_sweep(sweep, out, chunk_size=4)
    plan.jobs = [j for j in plan.jobs if j.spec.run_label == "noop"]  # one job of 4 episodes
    result: dict = {}
    driver = threading.Thread(target=lambda: result.update(r=run_sweep(plan, "slurm", slurm=SlurmOptions(**OPTIONS))))
    driver.start()
    store = EpisodeStore(out)
    wait_for(lambda: len(list(store.iter_raw())) == 1, what="the first episode recorded")
    job_id = running_workers(out)[0]["slurm_job_id"]
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)  # the second episode is under way
    wait_for(lambda: squeue_state(job_id) == "PENDING", what="the job requeued")
    assert len(list(store.iter_raw())) == 2, "the running episode was finished and recorded before the requeue"
    driver.join(timeout=600)
    assert result["r"].failures == []
    assert_exact(out, planned_keys(plan))
    [worker] = [json.loads(p.read_text()) for p in (out / "jobs" / "workers").glob("*.json")]
    assert worker["restarts"] == 1 and worker["outcome"] == {
        "ran": 2, "skipped": 2, "successes": 0, "policy_errors": 0, "env_errors": 0, "stopped_early": False}


@pytest.mark.parametrize("options, slurm_says", [
    (dict(partition="no-such-partition"), "invalid partition specified: no-such-partition"),
    (dict(mem="100000G"), "Memory specification can not be satisfied"),
    (dict(gpus_per_node=1), "Invalid generic resource (gres) specification"),  # this cluster has no GPUs
])
def test_bad_slurm_options_fail_with_slurms_message(slurm_cluster, libero_assets, tmp_path, options, slurm_says):
    plan = plan_sweep(load_sweep(SMOKE), tmp_path / "bad")
    with pytest.raises(SlurmError, match="Slurm refused the job array") as error:
        run_sweep(plan, "slurm", slurm=SlurmOptions(**{**OPTIONS, **options}), detach=True)
    assert slurm_says in str(error.value)
    assert not list(EpisodeStore(tmp_path / "bad").iter_raw())


def test_bad_time_is_refused_before_submitting(slurm_cluster, libero_assets, tmp_path):
    plan = plan_sweep(load_sweep(SMOKE), tmp_path / "bad")
    with pytest.raises(SlurmError, match="not a Slurm time"):
        run_sweep(plan, "slurm", slurm=SlurmOptions(**{**OPTIONS, "time": "four hours"}), detach=True)
