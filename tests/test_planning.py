"""`lamp-bench plan` (results/planning.py, harness/cli_stats.py): sample sizes checked against the
formula and simulation, a pilot read through the real store, and one-line refusals of bad input."""
import json
import math

import numpy as np
import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from lamp_bench.harness.cli import app
from lamp_bench.results import planning
from lamp_bench.results.store import EpisodeStore

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
# per suite: (A-only, B-only) wins among 40 pairs (4 tasks x 10 init states)
PILOT = {"libero_spatial": (8, 2), "libero_object": (6, 4), "libero_goal": (10, 2), "libero_10": (12, 4)}


def invoke(*args):
    return CliRunner().invoke(app, ["plan", *args])


def write_pilot(root, seed_b=0):
    writer = EpisodeStore(root).writer()
    for suite, (a_only, b_only) in PILOT.items():
        for e in range(40):
            task, init = divmod(e, 10)
            a = e < a_only or a_only + b_only <= e < a_only + b_only + 15  # then 15 pairs both succeed
            b = a_only <= e < a_only + b_only or a_only + b_only <= e < a_only + b_only + 15
            for label, success, seed in (("A", a, 0), ("B", b, seed_b)):
                writer.append({"label": label, "policy": label.lower(), "suite": suite, "task_id": task,
                               "init_index": init, "seed": seed, "success": success,
                               "status": "success" if success else "failure", "steps": 1})
    writer.close()


def test_fixed_size_is_connors_formula_and_simulates_to_the_power():
    delta, psi = 0.05, 0.2
    n = planning.fixed_pairs(delta, psi, 0.05, 0.8)
    expected = (1.959964 * math.sqrt(psi) + 0.841621 * math.sqrt(psi - delta ** 2)) ** 2 / delta ** 2
    assert n == math.ceil(expected) == 626
    rng = np.random.default_rng(5)
    counts = rng.multinomial(n, [(psi + delta) / 2, (psi - delta) / 2, 1 - psi], size=20_000)
    z = (counts[:, 0] - counts[:, 1]) / np.sqrt(counts[:, 0] + counts[:, 1])
    assert np.mean(np.abs(z) >= sps.norm.isf(0.025)) == pytest.approx(0.8, abs=0.015)


def test_detectable_gap_inverts_the_sample_size():
    for looks in (1, 5):
        plan = planning.sequential_pairs(0.08, 0.25, 0.05, 0.8, looks)
        found = planning.detectable_delta(plan.budget, lambda d: 0.25, 0.05, 0.8, 0.25, looks)
        assert found == pytest.approx(0.08, abs=0.002)
    assert planning.detectable_delta(5, lambda d: 0.3, 0.05, 0.8, 0.3) is None  # 5 pairs detect nothing


def test_discordance_from_rates():
    assert planning.discordance_from_rates(0.8, 0.85) == pytest.approx(0.8 * 0.15 + 0.85 * 0.2)
    assert planning.discordance_from_rates(0.7, 0.7, correlation=1.0) == pytest.approx(0.0)
    assert planning.discordance_from_rates(0.8, 0.85, 0.3) < planning.discordance_from_rates(0.8, 0.85)


def test_plan_from_a_pilot_per_suite_and_for_the_average(tmp_path):
    write_pilot(tmp_path)
    result = invoke("--pilot", str(tmp_path), "--labels", "A,B", "--delta", "0.1", "--episodes", "300", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)["rows"]}
    assert set(rows) == {*SUITES, "average (4 suites)"}
    for suite, (a_only, b_only) in PILOT.items():
        row = rows[suite]
        assert row["pilot_pairs"] == 40 and row["discordance"] == pytest.approx((a_only + b_only) / 40)
        assert row["pilot_difference"] == pytest.approx((a_only - b_only) / 40)
        assert row["fixed_n"] == planning.fixed_pairs(0.1, (a_only + b_only) / 40, 0.05, 0.8)
        assert row["sequential"]["budget"] >= row["fixed_n"] > row["sequential"]["expected_n"]
        assert 0 < row["detectable_fixed"] <= row["detectable_sequential"] < 0.2
    mean_psi = np.mean([(a + b) / 40 for a, b in PILOT.values()])
    average = rows["average (4 suites)"]
    assert average["fixed_n"] == math.ceil(planning.fixed_pairs(0.1, mean_psi, 0.05, 0.8) / 4)
    assert average["detectable_fixed"] < min(rows[s]["detectable_fixed"] for s in SUITES)
    table = invoke("--pilot", str(tmp_path), "--labels", "A,B", "--delta", "0.1")
    assert table.exit_code == 0 and "average (4 suites)" in table.stdout and "libero_goal" in table.stdout


def test_plan_from_assumed_rates():
    result = invoke("--rates", "0.80,0.85", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    psi = planning.discordance_from_rates(0.8, 0.85)
    assert rows[0]["delta"] == pytest.approx(0.05) and rows[0]["fixed_n"] == planning.fixed_pairs(0.05, psi, 0.05, 0.8)
    assert rows[-1]["name"] == "average (4 suites)" and rows[-1]["fixed_n"] == math.ceil(rows[0]["fixed_n"] / 4)


@pytest.mark.parametrize("args, expected", [
    (["--delta", "0", "--discordance", "0.2"], "Δ (--delta) must be"),
    (["--delta", "-0.05", "--discordance", "0.2"], "Δ (--delta) must be"),
    (["--delta", "0.05", "--alpha", "1.5", "--discordance", "0.2"], "α (--alpha) must lie in (0, 1)"),
    (["--delta", "0.05", "--alpha", "0", "--discordance", "0.2"], "α (--alpha) must lie in (0, 1)"),
    (["--delta", "0.05", "--power", "1", "--discordance", "0.2"], "power (--power) must lie in (0, 1)"),
    (["--discordance", "0.2"], "give --delta D"),
    (["--delta", "0.05"], "give --pilot RUNS --labels A,B"),
    (["--rates", "0.8", "--delta", "0.05"], "--rates expects two"),
])
def test_bad_input_is_one_line(args, expected):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unpaired_or_unknown_pilot_labels_are_one_line(tmp_path):
    write_pilot(tmp_path, seed_b=1)  # B ran other seeds: no episode pairs up
    for labels, expected in (("A,B", "share no episode"), ("A,C", "no episodes of 'C'"), ("A,A", "twice"),
                             ("A", "two comma-separated")):
        result = invoke("--pilot", str(tmp_path), "--labels", labels, "--delta", "0.05")
        assert result.exit_code == 2, result.output
        assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = invoke("--pilot", str(tmp_path / "none"), "--labels", "A,B", "--delta", "0.05")
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_a_pilot_whose_seeds_repeat_init_states_reports_its_design_effect(tmp_path):
    writer = EpisodeStore(tmp_path).writer()
    for init in range(20):
        for seed in range(3):  # A wins init states 0-5 on every seed, B states 6-7: outcomes follow the state
            for label, wins in (("A", init < 6), ("B", 6 <= init < 8)):
                writer.append({"label": label, "policy": label, "suite": "libero_spatial", "task_id": 0,
                               "init_index": init, "seed": seed, "success": wins,
                               "status": "success" if wins else "failure", "steps": 1})
    writer.close()
    result = invoke("--pilot", str(tmp_path), "--labels", "A,B", "--delta", "0.1", "--json")
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)["rows"]
    assert row["pilot_pairs"] == 60 and "design effect" in row["note"]
    deff = float(row["note"].split("design effect ")[1].split(",")[0])
    assert 2.9 < deff < 3.2  # identical outcomes on 3 seeds: 3 (times the small-sample factors 20/19, 59/60)
