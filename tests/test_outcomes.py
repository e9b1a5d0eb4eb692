"""The outcome taxonomy and fault handling, without a simulator: the fake suite and scripted policy of
tests/plugins/fake_suite.py crash, hang, raise or emit bad actions on command, in this process, in
spawned environment processes and in local workers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.executors import JobSpec, JobsFailed, run_job, run_local
from lamp_bench.harness.registry import POLICIES
from lamp_bench.harness.runner import RunOptions, run_episodes
from lamp_bench.harness.suite import SuiteSpec
from lamp_bench.harness.sweep import SweepError, load_sweep, plan_sweep, run_sweep, sweep_status
from lamp_bench.results.aggregate import Column, episode_frame, measure, summary
from lamp_bench.results.record import EpisodeRecord, protocol_id
from lamp_bench.results.store import EpisodeStore

pytestmark = pytest.mark.usefixtures("fake_plugins")


def job(out: Path, label: str = "s", suite: dict | None = None, policy: dict | None = None, **options) -> JobSpec:
    suite_kwargs = suite or {}
    episodes = SuiteSpec("fake", suite_kwargs).build().episodes()
    return JobSpec(policy="scripted", suite="fake", episodes=episodes, results_dir=str(out), label=label,
                   policy_kwargs=policy or {}, suite_kwargs=suite_kwargs, **options)


def outcomes(out: Path) -> dict[tuple[int, int], str]:
    return {(r["task_id"], r["init_index"]): r["status"] for r in EpisodeStore(out).records()}


def test_each_outcome_class_and_how_it_aggregates(tmp_path):
    """task 0: init 0/2 succeed, init 3 runs out of steps, init 1's environment raises every time (an env
    error after its retries); task 1: the policy emits NaN (policy errors, counted as failures)."""
    spec = job(tmp_path, suite={"fault": "raise", "fault_step": 2, "fault_on": [[0, 1]]},
               policy={"fault": "nan", "fault_tasks": [1]}, env_retries=1)
    outcome = run_job(spec)
    assert (outcome.ran, outcome.successes, outcome.policy_errors, outcome.env_errors) == (8, 2, 4, 1)
    assert outcomes(tmp_path) == {(0, 0): "success", (0, 1): "env_error", (0, 2): "success", (0, 3): "failure",
                                  (1, 0): "policy_error", (1, 1): "policy_error", (1, 2): "policy_error",
                                  (1, 3): "policy_error"}
    records = EpisodeStore(tmp_path).records()
    env = next(r for r in records if r["status"] == "env_error")
    assert env["attempts"] == 2 and "fake environment fault at step 2" in env["failure_reason"]
    assert "non-finite action" in next(r for r in records if r["status"] == "policy_error")["failure_reason"]
    assert {EpisodeRecord.from_json(r).protocol for r in records} == {protocol_id(SuiteSpec("fake").build()
                                                                                 .protocol_fields())}

    table = summary(records).set_index("task_id")
    # the env error is in no rate: 2 successes of the 7 episodes with a result; the cell is incomplete
    assert table.loc["all", ["episodes", "successes", "errors", "env_errors", "success_%", "incomplete"]].tolist() == \
           [7, 2, 4, 1, 28.6, True]
    assert table.loc["0", ["episodes", "successes", "env_errors", "success_%", "incomplete"]].tolist() == \
           [3, 2, 1, 66.7, True]
    assert table.loc["1", ["episodes", "errors", "env_errors", "success_%", "incomplete"]].tolist() == \
           [4, 4, 0, 0.0, False]
    cell = measure(episode_frame(records), {"label": "s"}, Column("fake", {"suite": "fake"}))
    assert (cell.estimate.n, cell.successes, cell.errors, cell.env_errors, cell.incomplete) == (7, 2, 4, 1, True)


@pytest.mark.parametrize("fault, reason", [
    ("raise", "policy failed: RuntimeError: scripted policy: act failed"),
    ("out_of_range", "out-of-range action"),
    ("bad_shape", "policy returned an action of shape (3,)"),
    ("reset_raise", "policy reset failed: RuntimeError"),
])
def test_policy_faults_are_policy_errors(tmp_path, fault, reason):
    run_job(job(tmp_path, suite={"tasks": 1, "init_states": 2}, policy={"fault": fault}))
    records = EpisodeStore(tmp_path).records()
    assert [r["status"] for r in records] == ["policy_error"] * 2
    assert all(reason in r["failure_reason"] for r in records), [r["failure_reason"] for r in records]


@pytest.mark.parametrize("fault", ["crash", "hang", "raise"])
def test_env_faults_are_retried_in_a_fresh_process(tmp_path, fault):
    """The fault fires once (counted across processes): the retry in a fresh environment process succeeds
    and the record says it took two attempts; the other slot's episodes are not disturbed."""
    suite = {"tasks": 1, "fault": fault, "fault_step": 1, "fault_on": [[0, 0]], "fault_times": 1,
             "fault_dir": str(tmp_path / "faults")}
    records = run_episodes(POLICIES.build("scripted"), SuiteSpec("fake", suite), SuiteSpec("fake", suite).build()
                           .episodes(), lambda r: None, options=RunOptions(envs_per_worker=2, env_timeout_s=2))
    by_init = {r["init_index"]: r for r in records}
    assert [by_init[i]["status"] for i in range(4)] == ["success", "failure", "success", "failure"]
    assert by_init[0]["attempts"] == 2 and all(by_init[i]["attempts"] == 1 for i in (1, 2, 3))


def test_a_hung_environment_times_out_and_ends_as_env_error(tmp_path):
    suite = {"tasks": 1, "init_states": 2, "fault": "hang", "fault_step": 0, "fault_on": [[0, 1]]}
    start = time.monotonic()
    records = run_episodes(POLICIES.build("scripted"), SuiteSpec("fake", suite), SuiteSpec("fake", suite).build()
                           .episodes(), lambda r: None,
                           options=RunOptions(envs_per_worker=2, env_timeout_s=1, env_retries=1))
    by_init = {r["init_index"]: r for r in records}
    assert by_init[0]["status"] == "success"
    assert by_init[1]["status"] == "env_error" and by_init[1]["attempts"] == 2
    assert "hung: no answer to reset within 1 s" in by_init[1]["failure_reason"]
    assert time.monotonic() - start < 60  # two 1 s timeouts and three process starts, not the 3600 s hang


def test_resume_retries_env_errors_and_their_result_replaces_them(tmp_path):
    broken = job(tmp_path, suite={"fault": "raise", "fault_step": 1, "fault_on": [[1, 2]]}, env_retries=0)
    assert run_job(broken).env_errors == 1
    assert EpisodeStore(tmp_path).done_keys("s") == set(broken.keys()) - {("s", "fake", 1, 2, 0)}
    again = run_job(job(tmp_path))  # the simulator works again: only the env error runs, once
    assert (again.ran, again.skipped, again.successes) == (1, 7, 1)
    assert outcomes(tmp_path)[(1, 2)] == "success" and len(list(EpisodeStore(tmp_path).iter_raw())) == 9
    assert not summary(EpisodeStore(tmp_path).records())["incomplete"].any()


@pytest.mark.parametrize("where", ["policy", "env"])
def test_a_configuration_error_stops_the_job_and_writes_no_records(tmp_path, where):
    """A wrong statistics key raised in the policy's reset (or a missing asset raised by the environment,
    here in env processes): one ConfigError, not K x N error records."""
    spec = (job(tmp_path, policy={"fault": "config_error"}) if where == "policy" else
            job(tmp_path, suite={"fault": "config", "fault_step": 0}, envs_per_worker=2))
    with pytest.raises(ConfigError, match="no action statistics" if where == "policy" else "asset folder missing"):
        run_job(spec)
    assert list(EpisodeStore(tmp_path).iter_raw()) == []


def test_a_configuration_error_in_a_local_worker_stops_the_run(tmp_path):
    spec = job(tmp_path, policy={"fault": "config_error", "fault_tasks": [1]})
    jobs = [replace(spec, episodes=[e for e in spec.episodes if e.task_id == 1])]
    with pytest.raises(ConfigError, match="no action statistics for dataset key 'fake'"):
        run_local(jobs, 1, tmp_path / "logs", poll_s=0.2)
    assert list(EpisodeStore(tmp_path).iter_raw()) == []


def test_a_configuration_error_stops_an_inline_sweep(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP.format(policy='fault = "config_error"', suite=""))
    plan = plan_sweep(load_sweep(path), tmp_path / "out", chunk_size=2)  # 4 jobs: the first one stops the sweep
    with pytest.raises(ConfigError, match="no action statistics"):
        run_sweep(plan, "inline")
    assert list(EpisodeStore(tmp_path / "out").iter_raw()) == []
    states = [json.loads(p.read_text())["state"] for p in (tmp_path / "out" / "jobs" / "workers").glob("*.json")]
    assert states == ["failed"]


def test_run_local_reports_each_failed_job_as_a_typed_failure(tmp_path):
    good = job(tmp_path, label="good", suite={"tasks": 1, "init_states": 2})
    bad = job(tmp_path, label="bad", suite={"tasks": 1, "init_states": 2}, policy={"fault": "build"})
    with pytest.raises(JobsFailed) as raised:
        run_local([good, bad], 2, tmp_path / "logs", poll_s=0.2)
    [failure] = raised.value.failures
    assert (failure.label, failure.suite) == ("bad", "fake")
    assert failure.error == "RuntimeError: scripted policy: told to fail while loading"
    assert str(failure) in str(raised.value)
    assert {r["label"] for r in EpisodeStore(tmp_path).records()} == {"good"}  # the good job's episodes are kept


def test_resume_refuses_to_mix_two_protocols_under_one_label(tmp_path):
    run_job(job(tmp_path, suite={"tasks": 1, "init_states": 2}))
    changed = job(tmp_path, suite={"tasks": 1, "init_states": 4, "version": "2"})
    with pytest.raises(ConfigError, match=r"already holds episodes of 's' on fake run under another protocol "
                                          r".*use another --label or --out"):
        run_job(changed)
    assert len(EpisodeStore(tmp_path).records()) == 2
    run_job(job(tmp_path, label="s-v2", suite={"tasks": 1, "init_states": 4, "version": "2"}))
    assert len(EpisodeStore(tmp_path).records()) == 6


SWEEP = """
[policies.s]
policy = "scripted"
kwargs = {{ {policy} }}
[suites.fake]
kwargs = {{ {suite} }}
[tables.t]
policies = ["s"]
suites = ["fake"]
"""


@pytest.mark.parametrize("policy, suite, message", [
    ('faul = "nan"', "", r"\[policies.s\] kwargs.faul: policy 'scripted' takes no argument 'faul'; did you mean "
                         r"'fault'\? \(it takes: fault, fault_step"),
    ("", "max_step = 3", r"\[suites.fake\] kwargs.max_step: suite 'fake' takes no argument 'max_step'; did you "
                         r"mean 'max_steps'\?"),
])
def test_sweep_kwargs_are_checked_against_the_factory_when_the_file_loads(tmp_path, policy, suite, message):
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP.format(policy=policy, suite=suite))
    with pytest.raises(SweepError, match=message):
        load_sweep(path)


def test_sweep_status_and_results_show_env_errors(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP.format(policy="", suite='fault = "raise", fault_step = 1, fault_on = [[0, 0]]'))
    plan = plan_sweep(load_sweep(path), tmp_path / "out")
    for planned in plan.jobs:
        planned.spec.env_retries = 0
    assert run_sweep(plan, "inline").failures == []
    [cell] = sweep_status(tmp_path / "out")
    assert (cell.total, cell.done, cell.failed, cell.env_errors, cell.pending) == (8, 7, 1, 1, 0)
    assert "environment error" in cell.errors[0]
    shown = subprocess.run([sys.executable, "-m", "lamp_bench.harness.cli", "results", str(tmp_path / "out")],
                           capture_output=True, text=True, check=True).stdout
    assert "env errors" in shown and "‡" in shown


def test_videos_are_written_off_the_loop_and_named_in_the_records(tmp_path):
    records = run_episodes(POLICIES.build("scripted"), SuiteSpec("fake", {"tasks": 1}), SuiteSpec("fake", {"tasks": 1})
                           .build().episodes(), lambda r: None, label="s",
                           options=RunOptions(record_video=2, results_dir=tmp_path))
    videos = {r["init_index"]: r["info"].get("video") for r in records}
    assert videos[2] is None and videos[3] is None
    assert videos[0].startswith("videos/s/fake/task0_init0_seed0_success.")
    assert videos[1].startswith("videos/s/fake/task0_init1_seed0_failure.")
    assert all((tmp_path / videos[i]).stat().st_size > 0 for i in (0, 1))


def test_local_workers_get_their_share_of_the_cores_for_thread_pools(monkeypatch):
    """N local workers each size torch's and llvmpipe's pools to cpus // N (oversubscribed OpenMP threads
    spin against each other); a value the user set is left alone and nothing leaks after submitting."""
    from lamp_bench.harness.executors import THREAD_POOL_VARIABLES, thread_share

    for name in THREAD_POOL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    with thread_share(2):
        assert [os.environ[name] for name in THREAD_POOL_VARIABLES] == ["4", "4"]
    with thread_share(16):
        assert os.environ["OMP_NUM_THREADS"] == "1"
    assert not any(name in os.environ for name in THREAD_POOL_VARIABLES)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    with thread_share(2):
        assert (os.environ["OMP_NUM_THREADS"], os.environ["LP_NUM_THREADS"]) == ("3", "4")
    assert os.environ["OMP_NUM_THREADS"] == "3" and "LP_NUM_THREADS" not in os.environ
