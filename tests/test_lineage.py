"""Lineage: the trainer's lineage.json, the chain from a cell's episodes to its demonstrations
(`lamp-bench lineage`, the report's section), held-out flags; and checkpoint selection on validation
init states (harness.selection) with its refusals."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from demo_data import needs_libero, short_demo_file

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.selection import best_step, check_disjoint, parse_selection
from lamp_bench.results.errors import ResultsInputError
from lamp_bench.results.lineage import cell_lineage, cell_lineages, compact, describe_states

CLI = [sys.executable, "-m", "lamp_bench.harness.cli"]
SHORT = dict(stage1_steps=2, stage2_steps=6, batch_size=4, warmup=0.1, log_every=2, save_every=2, lr=1e-3,
             progress=False, threads=1)


def _record(label, folder, checkpoint_hash, task, init, success=True, suite="libero_spatial"):
    return {"label": label, "suite": suite, "task_id": task, "init_index": init, "seed": 0, "policy": "lamp",
            "success": success, "status": "success" if success else "failure", "steps": 3,
            "checkpoint_hash": checkpoint_hash, "policy_config": {"checkpoint": str(folder) if folder else None}}


def _lineage_file(folder: Path, checkpoint_hash: str, demo_states, selection=None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lineage.json").write_text(json.dumps({
        "lineage_version": 1, "checkpoint_hash": checkpoint_hash, "trainer": {"code_commit": "abc123"},
        "training_config": {"policy": "lamp", "preset": "tiny", "stage": "both", "stage1_steps": 2,
                            "stage2_steps": 6, "seed": 0, "data": ["demos/set"]},
        "data": {"demo_set_hash": "d" * 64, "suites": ["libero_spatial"], "collection": {"noise": 0.1},
                 "files": [{"suite": "libero_spatial", "task_id": 0, "init_states": list(demo_states)}]},
        "selection": selection}))


def test_chain_flags_demo_and_selection_states(tmp_path):
    _lineage_file(tmp_path / "ckpt", "h1", range(0, 10), {"validation_init_states": [10, 11], "chosen_step": 4})
    records = [_record("lamp", tmp_path / "ckpt", "h1", 0, s) for s in (9, 11, 20)]
    cell = cell_lineage(records, "lamp", "libero_spatial")
    (c,) = cell.checkpoints
    assert c.status == "ok" and c.code_commit == "abc123" and c.demo_set_hash == "d" * 64
    assert c.on_demo_states == ((0, 9),) and c.on_selection_states == ((0, 11),)
    assert c.chosen_step == 4 and c.collection == {"noise": 0.1}


def test_missing_stale_and_untrained_lineage(tmp_path):
    _lineage_file(tmp_path / "old", "other-weights", [0])
    records = [_record("a", tmp_path / "old", "h2", 0, 0), _record("b", tmp_path / "none", "h3", 0, 0),
               _record("c", None, None, 0, 0)]
    status = {cell.label: cell.checkpoints[0].status for cell in cell_lineages(records)}
    assert status == {"a": "stale", "b": "missing", "c": "untrained"}
    with pytest.raises(ResultsInputError, match="no episodes of label 'x'"):
        cell_lineage(records, "x", "libero_spatial")


def test_state_descriptions():
    assert compact([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert describe_states([(0, 1), (0, 2), (1, 1), (1, 2)]) == "init states 1-2 of tasks 0-1"


def test_selection_table_and_overlap_refusals():
    where = "[train.lamp]"
    selection = parse_selection({"every": 5, "episodes": 2, "init_states": "10-19"}, where, "libero_spatial", [0, 1])
    assert selection.validation_states == (10, 11) and selection.tasks == (0, 1)
    with pytest.raises(ConfigError, match="unknown keys"):
        parse_selection({"every": 5, "init_states": "1", "evry": 2}, where, "s", None)
    with pytest.raises(ConfigError, match="select.every"):
        parse_selection({"every": 0, "init_states": "1"}, where, "s", None)
    with pytest.raises(ConfigError, match="select.episodes must be 1..3"):
        parse_selection({"every": 1, "init_states": [1, 2, 3], "episodes": 4}, where, "s", None)
    with pytest.raises(ConfigError, match="evaluation init states 10,11 were used to select"):
        check_disjoint((10, 11, 12), (0, 1, 10, 11), where)
    check_disjoint((10, 11), (0, 1), where)
    assert best_step({"2": {"step": 2, "successes": 3}, "4": {"step": 4, "successes": 3},
                      "6": {"step": 6, "successes": 1}}) == 4


@needs_libero
@pytest.mark.slow
@pytest.mark.ci
def test_training_writes_lineage_and_the_cli_prints_the_chain(tmp_path, libero_assets):
    """Real: a short training on a real demonstration, selection on init state 40 with the real LIBERO suite
    (8 steps per episode), evaluation on state 0 through evaluate(out=...), then `lamp-bench lineage` and the
    report's section."""
    from lamp_bench.harness.evaluate import evaluate
    from lamp_bench.harness.selection import train_with_selection
    from lamp_bench.models.lamp.checkpoint import checkpoint_hash
    from lamp_bench.models.training.config import build_train_config
    from lamp_bench.reports.build import build_report
    from lamp_bench.suites.libero import LiberoProtocol

    data = short_demo_file().parent  # task 0, the demonstration of init state 0
    out = tmp_path / "ckpt"
    config = build_train_config(preset="tiny", data=[str(data)], out=str(out), **SHORT)
    suite_kwargs = {"protocol": LiberoProtocol(max_steps=8)}
    selection = parse_selection({"every": 3, "init_states": [40]}, "[train.t]", "libero_spatial", [0], suite_kwargs)
    train_with_selection(config, selection)
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["checkpoint_hash"] == checkpoint_hash(out)
    assert lineage["training_config"]["stage2_steps"] == 6 and lineage["trainer"]["code_commit"]
    assert lineage["data"]["files"][0]["init_states"] == [0] and len(lineage["data"]["demo_set_hash"]) == 64
    assert [s["step"] for s in lineage["selection"]["scores"]] == [3, 6]
    assert lineage["selection"]["validation_init_states"] == [40]
    assert lineage["depth_estimator"] == {"source": "sim"}  # the tiny preset lifts with simulator depth
    results = tmp_path / "results"
    evaluate(out, policy="sim-depth", suite="libero_spatial", tasks=[0], init_states=[0, 1], out=results,
             label="lamp", suite_kwargs=suite_kwargs)
    shown = subprocess.run([*CLI, "lineage", str(results), "--label", "lamp", "--suite", "libero_spatial"],
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert lineage["checkpoint_hash"] in shown.stdout and lineage["data"]["demo_set_hash"] in shown.stdout
    assert "not held out" in shown.stdout and "selected at step" in shown.stdout
    assert "depth: the simulator's" in shown.stdout
    bad = subprocess.run([*CLI, "lineage", str(results), "--label", "nope", "--suite", "libero_spatial"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no episodes of label 'nope'" in bad.stderr
    report = build_report(results, formats="md")
    text = Path([p for p in report if p.name == "report.md"][0]).read_text()
    assert "Lineage" in text and "demonstrations were recorded from" in text
