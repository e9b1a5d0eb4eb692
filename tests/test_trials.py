"""Real-robot trials: scripted and interactive recording (CliRunner stdin and a real pty), resume,
corrections that supersede without overwriting, bad input, and the report's real-world table checked
against results.stats on a hand-made set of trials."""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from lamp_bench.harness import provenance
from lamp_bench.harness.cli import app
from lamp_bench.reports import build_report
from lamp_bench.results import stats
from lamp_bench.results.store import EpisodeStore
from lamp_bench.results.trials import TrialPlan, TrialStore, correction_of, new_trial

runner = CliRunner()
LAMP_BENCH = Path(sys.executable).parent / "lamp-bench"


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, ["trials", *args], input=input)


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_help_explains_the_subcommands():
    result = runner.invoke(app, ["trials", "--help"])
    assert result.exit_code == 0
    for word in ("record", "correct", "show", "--trials-per-task", "supersedes", "resumes"):
        assert word in result.stdout


def test_scripted_trial_carries_fields_and_provenance(tmp_path):
    metadata = tmp_path / "server.json"
    metadata.write_text(json.dumps({"policy": "lamp", "protocol": "openpi", "action_horizon": 8}))
    result = invoke("record", str(tmp_path / "res"), "--label", "lamp", "--task-type", "pick", "--trial", "3",
                    "--success",
                    "yes", "--notes", "slow grasp", "--video", "clips/pick3.mp4", "--operator", "ana",
                    "--checkpoint-hash", "feedbeef", "--server-metadata", str(metadata))
    assert result.exit_code == 0, result.output
    [trial] = TrialStore(tmp_path / "res").current()
    assert (trial.label, trial.policy, trial.task_type, trial.trial, trial.success) == ("lamp", "lamp", "pick", 3, True)
    assert (trial.notes, trial.video, trial.operator) == ("slow grasp", "clips/pick3.mp4", "ana")
    assert trial.checkpoint_hash == "feedbeef"
    assert trial.server_metadata == {"policy": "lamp", "protocol": "openpi", "action_horizon": 8}
    assert trial.provenance["code_commit"] == provenance.code_commit()
    assert trial.provenance["versions"]["numpy"] == provenance.package_versions()["numpy"]
    assert not trial.is_correction
    # trials live in their own folder: episode readers see nothing
    assert list((tmp_path / "res").iterdir()) == [tmp_path / "res" / "trials"]
    assert EpisodeStore(tmp_path / "res").records() == []


def test_checkpoint_folder_is_hashed_as_for_episodes(tmp_path):
    from safetensors.numpy import save_file

    from lamp_bench.models.lamp.checkpoint import WEIGHTS, checkpoint_hash

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, str(ckpt / WEIGHTS))
    res = tmp_path / "res"
    assert invoke("record", str(res), "--label", "lamp", "--task-type", "pick", "--trial", "1", "--success", "no",
                  "--checkpoint", str(ckpt)).exit_code == 0
    assert TrialStore(res).current()[0].checkpoint_hash == checkpoint_hash(ckpt)
    # one label never mixes two checkpoints
    other = invoke("record", str(res), "--label", "lamp", "--task-type", "pick", "--trial", "2", "--success", "no",
                   "--checkpoint-hash", "0ther")
    assert other.exit_code == 2 and len(error_lines(other)) == 1


def test_interactive_recording_resumes_at_the_next_unrecorded_trial(tmp_path):
    res = str(tmp_path / "res")
    plan = ("--label", "lamp", "--task-types", "pick,drawer", "--trials-per-task", "2", "--operator", "bo",
            "--video-template", "videos/{label}/{task_type}_{trial}.mp4")
    # answers for pick #1 (a typo re-asked, then y with notes) and pick #2, then stdin ends
    first = invoke("record", res, *plan, input="yes please\ny\nfast grasp\nn\n\n")
    assert first.exit_code == 1, first.output
    assert "answer y or n" in first.stderr and "2 of 4 recorded; run the same command to resume" in first.stderr
    trials = {t.key: t for t in TrialStore(res).current()}
    assert [(k, t.success, t.notes) for k, t in sorted(trials.items())] == [
        (("lamp", "pick", 1), True, "fast grasp"), (("lamp", "pick", 2), False, None)]
    assert trials[("lamp", "pick", 1)].video == "videos/lamp/pick_1.mp4"
    assert trials[("lamp", "pick", 1)].plan == {"task_types": ["pick", "drawer"], "trials_per_task": 2}
    second = invoke("record", res, *plan, input="y\n\ny\nhandle missed once\n")
    assert second.exit_code == 0, second.output
    assert "starting at drawer #1" in second.stderr and "pick #1" not in second.stderr
    assert len(TrialStore(res).current()) == 4
    third = invoke("record", res, *plan, input="")
    assert third.exit_code == 0 and "all 4 planned trials are recorded" in third.stderr


def _run_in_pty(args: list[str], answers: bytes, timeout: float = 60.0) -> tuple[int, str]:
    """Run the installed lamp-bench on a real terminal (a pty), typing `answers`."""
    master, slave = os.openpty()
    proc = subprocess.Popen([str(LAMP_BENCH), *args], stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                            env={**os.environ, "COLUMNS": "100"})
    os.close(slave)
    os.write(master, answers)  # the terminal's line discipline holds the lines until input() reads them
    output, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=10), output.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


@pytest.mark.skipif(not LAMP_BENCH.exists(), reason="the lamp-bench console script is not installed")
def test_interactive_recording_on_a_real_terminal(tmp_path):
    res = tmp_path / "res"
    code, output = _run_in_pty(["trials", "record", str(res), "--label", "lamp", "--task-types", "pick,tool",
                                "--trials-per-task", "2"], b"y\nclean\nmaybe\nn\ndropped it\nq\n")
    assert code == 0, output
    assert "tool #1" in output and "stopped: 2 of 4 recorded" in output
    trials = TrialStore(res).current()
    assert [(t.task_type, t.trial, t.success, t.notes) for t in trials] == [
        ("pick", 1, True, "clean"), ("pick", 2, False, "dropped it")]


def test_correction_supersedes_and_keeps_the_original(tmp_path):
    res = tmp_path / "res"
    assert invoke("record", str(res), "--label", "lamp", "--task-type", "pick", "--trial", "3", "--success", "yes",
                  "--notes", "ok", "--operator", "ana").exit_code == 0
    [original_shard] = TrialStore(res).shards()
    original_bytes = original_shard.read_bytes()
    fixed = invoke("correct", str(res), "--label", "lamp", "--task-type", "pick", "--trial", "3", "--success", "no",
                   "--reason", "typed y; the object fell after release")
    assert fixed.exit_code == 0, fixed.output
    again = invoke("correct", str(res), "--label", "lamp", "--task-type", "pick", "--trial", "3", "--notes",
                   "fell after release", "--reason", "notes", "--operator", "cy")
    assert again.exit_code == 0, again.output
    assert original_shard.read_bytes() == original_bytes  # never rewritten
    history = TrialStore(res).history()[("lamp", "pick", 3)]
    assert len(history) == 3
    first, second, third = history
    assert (second.supersedes, third.supersedes) == (first.record_id, second.record_id)
    current = TrialStore(res).find("lamp", "pick", 3)
    assert current == third
    assert (current.success, current.notes, current.operator) == (False, "fell after release", "cy")
    assert current.correction_reason == "notes" and first.success is True
    shown = invoke("show", str(res), "--history")
    assert shown.exit_code == 0 and shown.stdout.count("superseded") == 2


BAD_INPUT = {
    "label format": ["record", "--label", "lamp v2", "--task-type", "pick", "--trial", "1", "--success", "yes"],
    "trial out of plan": ["record", "--label", "lamp", "--task-type", "pick", "--trial", "11", "--success", "yes",
                          "--task-types", "pick,drawer", "--trials-per-task", "10"],
    "task type out of plan": ["record", "--label", "lamp", "--task-type", "tool", "--trial", "1", "--success", "yes",
                              "--task-types", "pick,drawer", "--trials-per-task", "10"],
    "trial index 0": ["record", "--label", "lamp", "--task-type", "pick", "--trial", "0", "--success", "yes"],
    "success not yes/no": ["record", "--label", "lamp", "--task-type", "pick", "--trial", "1", "--success", "maybe"],
    "scripted trial incomplete": ["record", "--label", "lamp", "--task-type", "pick", "--success", "yes"],
    "no plan and no trial": ["record", "--label", "lamp"],
    "half a plan": ["record", "--label", "lamp", "--task-types", "pick"],
    "already recorded": ["record", "--label", "lamp", "--task-type", "pick", "--trial", "1", "--success", "no"],
    "correct unrecorded": ["correct", "--label", "lamp", "--task-type", "pick", "--trial", "2", "--success", "no",
                           "--reason", "x"],
    "correct nothing": ["correct", "--label", "lamp", "--task-type", "pick", "--trial", "1", "--reason", "x"],
    "correct success not yes/no": ["correct", "--label", "lamp", "--task-type", "pick", "--trial", "1", "--success",
                                   "nope", "--reason", "x"],
    "bad video template": ["record", "--label", "lamp", "--task-types", "pick", "--trials-per-task", "2",
                           "--video-template", "{episode}.mp4"],
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_exits_2_with_one_line(tmp_path, case):
    res = tmp_path / "res"
    assert invoke("record", str(res), "--label", "lamp", "--task-type", "pick", "--trial", "1", "--success",
                  "yes").exit_code == 0
    command, *args = BAD_INPUT[case]
    result = invoke(command, str(res), *args)
    assert result.exit_code == 2, result.output
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert len(TrialStore(res).current()) == 1


def test_checkpoint_hash_comes_from_the_server_metadata(tmp_path):
    metadata = tmp_path / "server.json"
    metadata.write_text(json.dumps({"server": "lamp-bench", "policy": "lamp", "checkpoint_hash": "abc123"}))
    res = str(tmp_path / "res")
    args = ("record", res, "--label", "lamp", "--task-type", "pick", "--success", "yes", "--server-metadata",
            str(metadata))
    assert invoke(*args, "--trial", "1").exit_code == 0
    assert TrialStore(res).current()[0].checkpoint_hash == "abc123"
    assert invoke(*args, "--trial", "2", "--checkpoint-hash", "abc123").exit_code == 0
    disagree = invoke(*args, "--trial", "3", "--checkpoint-hash", "other")
    assert disagree.exit_code == 2 and len(error_lines(disagree)) == 1
    assert len(TrialStore(res).current()) == 2


def test_server_metadata_must_be_a_json_object(tmp_path):
    bad = tmp_path / "meta.json"
    bad.write_text("[1, 2]")
    result = invoke("record", str(tmp_path / "res"), "--label", "lamp", "--task-type", "pick", "--trial", "1",
                    "--success", "yes", "--server-metadata", str(bad))
    assert result.exit_code == 2 and len(error_lines(result)) == 1


# --- the report ---------------------------------------------------------------------------------------------

# trial i (1-based) of a task type succeeded where the string has "1" at position i - 1
LAMP = {"pick": "1111111110", "drawer": "1111111100", "tool": "1101111011"}
OPENVLA = {"pick": "1111111000", "drawer": "0111111100", "tool": "1111010010"}


def write_trials(root: Path) -> None:
    store = TrialStore(root)
    plan = TrialPlan(("pick", "drawer", "tool"), 10)
    for label, outcomes in (("lamp", LAMP), ("openvla", OPENVLA)):
        for task_type, bits in outcomes.items():
            for i, bit in enumerate(bits, start=1):
                recorded = bit == "1" if (label, task_type, i) != ("lamp", "tool", 3) else True  # mistyped
                store.append(new_trial(label, label, task_type, i, recorded, "ana", plan=plan,
                                       checkpoint_hash=f"sha-{label}", provenance={"code_commit": "c0ffee"}))
    mistyped = store.find("lamp", "tool", 3)
    store.append(correction_of(mistyped, "typed y; it failed", success=False))
    # a lamp trial openvla never ran: counted in lamp's rates, not in the paired comparison
    store.append(new_trial("lamp", "lamp", "pick", 11, True, "ana", checkpoint_hash="sha-lamp",
                           provenance={"code_commit": "c0ffee"}))


@pytest.fixture(scope="module")
def trial_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    write_trials(root)
    writer = EpisodeStore(root).writer()  # one simulated episode: both kinds render side by side
    writer.append({"label": "lamp", "policy": "lamp", "suite": "libero_spatial", "task_id": 0, "init_index": 0,
                   "seed": 0, "status": "success", "success": True, "steps": 10, "provenance": {}})
    writer.close()
    out = root / "report"
    build_report(root, out_dir=out, formats=("md", "csv", "html"))
    return root, out, pd.read_csv(out / "report.csv", keep_default_na=False, dtype=str)


def cell(cells, table, row, column) -> dict:
    hit = cells[(cells["table"] == table) & (cells["row"] == row) & (cells["column"] == column)]
    assert len(hit) == 1, f"no single cell {table}/{row}/{column}"
    return hit.iloc[0].to_dict()


def successes(bits: str) -> int:
    return bits.count("1")


@pytest.mark.parametrize("label,outcomes,extra", [("lamp", LAMP, (1, 1)), ("openvla", OPENVLA, (0, 0))])
def test_report_rates_and_wilson_intervals(trial_report, label, outcomes, extra):
    _, _, cells = trial_report
    for task_type, bits in outcomes.items():
        k, n = successes(bits) + (extra[0] if task_type == "pick" else 0), 10 + (extra[1] if task_type == "pick" else 0)
        got = cell(cells, "real_world", label, task_type)
        low, high = stats.wilson_interval(k, n)
        assert (int(got["successes"]), int(got["episodes"])) == (k, n)
        assert float(got["value"]) == pytest.approx(100 * k / n)
        assert (float(got["ci_low"]), float(got["ci_high"])) == pytest.approx((100 * low, 100 * high))
    k = sum(map(successes, outcomes.values())) + extra[0]
    n = 30 + extra[1]
    overall = cell(cells, "real_world", label, "Overall")
    low, high = stats.wilson_interval(k, n)
    assert (int(overall["successes"]), int(overall["episodes"])) == (k, n)
    assert (float(overall["ci_low"]), float(overall["ci_high"])) == pytest.approx((100 * low, 100 * high))


def test_wilson_by_hand():
    """The interval the table's lamp/pick cell would show for 9/10, from the textbook formula."""
    low, high = stats.wilson_interval(9, 10)
    assert (float(low), float(high)) == pytest.approx((0.5958, 0.9821), abs=1e-4)


def test_report_paired_comparison_on_matched_trials(trial_report):
    _, _, cells = trial_report
    pairs = [(a == "1", b == "1") for t in LAMP for a, b in zip(LAMP[t], OPENVLA[t])]
    lamp_only = sum(a and not b for a, b in pairs)
    openvla_only = sum(b and not a for a, b in pairs)
    got = cell(cells, "real_world_differences", "lamp − openvla", "Overall")
    assert got["paired"] == "True" and int(float(got["n_pairs"])) == 30  # lamp's pick #11 has no partner
    assert float(got["value"]) == pytest.approx(100 * (lamp_only - openvla_only) / 30)
    expected_p = sps.binomtest(lamp_only, lamp_only + openvla_only, 0.5).pvalue
    assert float(got["p_value"]) == pytest.approx(expected_p)
    assert float(got["p_value"]) == pytest.approx(float(stats.mcnemar_exact(lamp_only, openvla_only)))
    drawer = cell(cells, "real_world_differences", "lamp − openvla", "drawer")
    assert int(float(drawer["n_pairs"])) == 10


def test_report_paper_rows_beside(trial_report):
    _, _, cells = trial_report
    assert float(cell(cells, "real_world", "paper: LaMP (ours)", "Overall")["value"]) == 82.0
    assert float(cell(cells, "real_world", "paper: OpenVLA-7B", "Overall")["value"]) == 71.0
    k = sum(map(successes, LAMP.values())) + 1
    delta = cell(cells, "real_world", "Δ lamp − paper LaMP (ours)", "Overall")
    assert float(delta["value"]) == pytest.approx(100 * k / 31 - 82.0)


def test_report_pages_hold_the_section(trial_report):
    root, out, _ = trial_report
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert "## Real-world trials" in md and "## LIBERO" in md
    assert "1 trial record(s) were corrected" in md
    assert "61 real-robot trial(s) of 2 label(s)" in md
    assert 'id="s-real_world"' in page and 'id="real_world_differences"' in page and 'id="s-libero"' in page
    assert (out / "figures" / "real_world.png").is_file()
    assert len(EpisodeStore(root).records()) == 1


def test_report_of_trials_alone(tmp_path):
    write_trials(tmp_path)
    files = build_report(tmp_path, formats=("md",))
    assert "## Real-world trials" in (tmp_path / "report" / "report.md").read_text()
    assert tmp_path / "report" / "report.md" in files
