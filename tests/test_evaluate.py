"""`evaluate()` from Python: records and summary, chosen init states, resumable into a results directory."""
from __future__ import annotations

import subprocess
import sys

import pytest

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.evaluate import evaluate
from lamp_bench.harness.registry import POLICIES
from lamp_bench.results.store import EpisodeStore

FAKE = {"tasks": 2, "init_states": 6, "max_steps": 4, "success_step": 2, "succeed": "even"}


def test_policy_object_on_chosen_init_states(fake_plugins):
    policy = POLICIES.build("scripted")
    result = evaluate(policy, suite="fake", suite_kwargs=FAKE, init_states="2-5", label="mine")
    assert [(r["task_id"], r["init_index"]) for r in result.records] == [(t, s) for t in (0, 1) for s in (2, 3, 4, 5)]
    summary = result.summary
    # the fake suite: even init states succeed, odd ones fail
    assert (summary.episodes, summary.successes, summary.ran) == (8, 4, 8)
    assert summary.success_rate == 0.5 and summary.init_states == (2, 3, 4, 5)
    assert summary.interval[0] < 0.5 < summary.interval[1]
    assert [(t.task_id, t.episodes, t.successes) for t in summary.per_task] == [(0, 4, 2), (1, 4, 2)]
    assert all(r["label"] == "mine" for r in result.records)


def test_out_is_resumable_and_batched_gives_the_same_outcomes(fake_plugins, tmp_path):
    first = evaluate(POLICIES.build("scripted"), suite="fake", suite_kwargs=FAKE, tasks=[0], episodes_per_task=3,
                     out=tmp_path, label="s")
    assert first.summary.ran == 3 and len(EpisodeStore(tmp_path).records()) == 3
    again = evaluate(POLICIES.build("scripted"), suite="fake", suite_kwargs=FAKE, tasks="0-1", episodes_per_task=3,
                     out=tmp_path, label="s", envs_per_worker=2)
    assert again.summary.ran == 3  # only task 1 was missing
    assert [(r["task_id"], r["init_index"], r["success"]) for r in again.records] == \
        [(t, s, s % 2 == 0) for t in (0, 1) for s in range(3)]
    assert len(EpisodeStore(tmp_path).records()) == 6


def test_policy_errors_are_outcomes_not_exceptions(fake_plugins):
    result = evaluate(POLICIES.build("scripted", fault="nan", fault_tasks=[1]), suite="fake", suite_kwargs=FAKE,
                      episodes_per_task=2)
    assert result.summary.policy_errors == 2 and result.summary.episodes == 4


def test_bad_requests_are_config_errors(fake_plugins, tmp_path):
    with pytest.raises(ConfigError, match="init states 0..5"):
        evaluate(POLICIES.build("scripted"), suite="fake", suite_kwargs=FAKE, init_states=[4, 9])
    with pytest.raises(ConfigError, match="one episode per init state"):
        evaluate(POLICIES.build("scripted"), suite="fake", suite_kwargs=FAKE, init_states="0-3", episodes_per_task=2)
    with pytest.raises(ConfigError, match="not a directory"):
        evaluate(tmp_path / "missing", suite="fake", suite_kwargs=FAKE)


def test_a_checkpoint_folder_loads_as_the_named_policy(fake_plugins, tmp_path):
    from tests.checkpoints import paper_configs, write_checkpoints

    root = write_checkpoints(tmp_path, {"lamp": paper_configs()["lamp"]})
    # the fake suite's 8-pixel images with sim-depth: the tiny model runs (no depth estimator weights)
    result = evaluate(root / "lamp", policy="sim-depth", suite="fake", suite_kwargs=FAKE, episodes_per_task=1)
    assert result.summary.checkpoint_hash and len(result.summary.checkpoint_hash) == 64
    assert all(r["checkpoint_hash"] == result.summary.checkpoint_hash for r in result.records)
    assert result.summary.episodes == 2


def test_lamp_bench_evaluate_is_the_entry_point_and_loads_nothing_heavy():
    """`import lamp_bench` gives `lamp_bench.evaluate`; importing the package, or only its results and
    reports, pulls in neither the harness nor torch (checked in a fresh interpreter)."""
    probe = (
        "import sys, lamp_bench, lamp_bench.results.stats, lamp_bench.reports.render\n"
        "assert 'lamp_bench.harness' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)\n"
        "from lamp_bench.harness.evaluate import evaluate, Evaluation\n"
        "assert lamp_bench.evaluate is evaluate and lamp_bench.Evaluation is Evaluation\n"
        "assert 'evaluate' in dir(lamp_bench)\n"
        "try:\n"
        "    lamp_bench.no_such_name\n"
        "except AttributeError:\n"
        "    print('ok')\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
