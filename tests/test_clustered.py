"""Intervals that respect shared init states (results/clustered.py), checked by simulation (vectorised,
fixed seeds, 10,000 simulated evaluations per setting): 50 init states x 3 seeds, as OpenVLA reports."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from lamp_bench.results import clustered, stats
from lamp_bench.results.aggregate import Column, compare, episode_frame, measure

SIMULATIONS, STATES, SEEDS = 10_000, 50, 3
SIZES = np.full(STATES, SEEDS)


def covered(low, high, truth) -> float:
    return float(np.mean((low <= truth) & (truth <= high)))


def test_design_effect_wilson_covers_where_the_naive_interval_does_not():
    rng = np.random.default_rng(11)
    # init states are easy (0.95), medium (0.6) or hard (0.1) for the policy, whatever the seed
    kinds, shares = np.array([0.95, 0.6, 0.1]), np.array([0.5, 0.3, 0.2])
    truth = float(kinds @ shares)
    per_state = kinds[rng.choice(3, size=(SIMULATIONS, STATES), p=shares)]
    successes = rng.binomial(SEEDS, per_state)  # simulations x init states
    naive = covered(*stats.wilson_interval(successes.sum(axis=1), STATES * SEEDS), truth)
    low, high, deff = clustered.clustered_wilson(successes, SIZES)
    assert naive < 0.88  # 150 episodes counted as independent: far too narrow
    assert 0.935 <= covered(low, high, truth) <= 0.965
    assert 1.6 < deff.mean() < 2.4  # ICC ~ 0.5 with 3 seeds: 1 + 2 * ICC


def test_design_effect_is_one_without_repeats_and_floored():
    assert clustered.design_effects([[1, 0, 1, 1, 0]], np.ones(5))[0] == pytest.approx(1.0)  # one episode per state
    assert clustered.design_effects([[3, 3, 3]], [3, 3, 3])[0] == 1.0  # all successes: no variance to inflate


@pytest.mark.parametrize("kinds_a, kinds_b, shares", [
    ([0.95, 0.95, 0.1, 0.9], [0.95, 0.2, 0.1, 0.3], [0.4, 0.2, 0.2, 0.2]),  # A better on some states
    ([0.9, 0.1, 0.5], [0.1, 0.9, 0.5], [0.3, 0.3, 0.4]),  # no difference on average, large per state
])
def test_cluster_bootstrap_covers_paired_differences(kinds_a, kinds_b, shares):
    rng = np.random.default_rng(12)
    kinds_a, kinds_b, shares = map(np.array, (kinds_a, kinds_b, shares))
    truth = float((kinds_a - kinds_b) @ shares)
    kind = rng.choice(len(shares), size=(SIMULATIONS, STATES), p=shares)
    ya = rng.random((SIMULATIONS, STATES, SEEDS)) < kinds_a[kind][..., None]
    yb = rng.random((SIMULATIONS, STATES, SEEDS)) < kinds_b[kind][..., None]
    d = (ya.astype(int) - yb).sum(axis=2)  # per init state: A-only minus B-only successes
    boot = clustered.cluster_bootstrap(d, SIZES, 1000, rng)
    low, high = np.quantile(boot, [0.025, 0.975], axis=0)
    pairs = (ya.astype(int) - yb).reshape(SIMULATIONS, -1)
    n = STATES * SEEDS
    estimate = pairs.mean(axis=1)
    se = np.sqrt(((pairs != 0).mean(axis=1) - estimate ** 2) / n)  # pairs taken as independent
    assert covered(estimate - 1.96 * se, estimate + 1.96 * se, truth) < 0.89
    assert 0.93 <= covered(low, high, truth) <= 0.965
    if truth == 0:  # the tests: McNemar rejects far too often, the clustered McNemar does not
        b, c = (pairs == 1).sum(axis=1), (pairs == -1).sum(axis=1)
        assert np.mean(stats.mcnemar_exact(b, c) < 0.05) > 0.10
        z = d.sum(axis=1) / np.sqrt((d * d).sum(axis=1))
        assert np.mean(2 * sps.norm.sf(np.abs(z)) < 0.05) <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / SIMULATIONS)


def test_durkalski_is_mcnemar_with_one_pair_per_state():
    d = np.array([1] * 12 + [-1] * 5 + [0] * 30)
    expected = 2 * sps.norm.sf(7 / np.sqrt(17))  # (b - c) / sqrt(b + c)
    assert clustered.durkalski_p(d) == pytest.approx(expected)
    assert clustered.durkalski_p(np.zeros(4)) == 1.0


def records(label, outcome, seeds=(0, 1, 2), suites=("libero_spatial",), tasks=2, states=10):
    return [{"label": label, "policy": label, "suite": suite, "task_id": t, "init_index": i, "seed": s,
             "success": bool(outcome(suite, t, i, s)), "status": "success" if outcome(suite, t, i, s) else "failure",
             "steps": 1} for suite in suites for t in range(tasks) for i in range(states) for s in seeds]


def test_report_cells_cluster_only_where_seeds_repeat_init_states():
    easy = lambda suite, t, i, s: i < 6  # noqa: E731  (whether a state is solved does not depend on the seed)
    frame = episode_frame(records("a", easy))
    column = Column("Spatial", {"suite": "libero_spatial"})
    cell = measure(frame, {"label": "a"}, column)
    naive = stats.weighted_rate([cell.successes], [60])
    assert cell.estimate.rate == pytest.approx(0.6) and cell.estimate.n == 60
    assert cell.estimate.design_effect == pytest.approx(60 / cell.estimate.n_eff) and cell.estimate.design_effect > 2
    assert cell.estimate.high - cell.estimate.low > naive.high - naive.low
    single = measure(episode_frame(records("a", easy, seeds=(0,))), {"label": "a"}, column)
    assert single.estimate == stats.weighted_rate([12], [20])  # one seed: the plain Wilson interval, unchanged


def test_report_differences_and_averages_cluster():
    suites = ("libero_spatial", "libero_object")
    a = records("a", lambda suite, t, i, s: i < 7, suites=suites)
    b = records("b", lambda suite, t, i, s: i < 5 or (i == 9 and s == 0), suites=suites)
    frame = episode_frame(a + b)
    average = Column("Average", {"suite": suites}, strata="suite", required=suites)
    diff = compare(frame, {"label": "a"}, {"label": "b"}, average)
    assert diff.paired and diff.clusters == 2 * 2 * 10 and diff.n_pairs == 120
    assert diff.diff == pytest.approx((2 * 3 - 1) / 30)  # per task: states 5, 6 x 3 seeds; state 9 once
    assert diff.low < diff.diff < diff.high
    d = np.array(([0] * 5 + [3, 3, 0, 0, -1]) * 4, dtype=float)  # per init state: A only minus B only
    assert diff.p_value == pytest.approx(clustered.durkalski_p(d))
    cell = measure(frame, {"label": "a"}, average)
    assert cell.estimate.rate == pytest.approx(0.7) and cell.strata == 2 and cell.estimate.design_effect > 1
    one = measure(frame, {"label": "a"}, Column("Spatial", {"suite": "libero_spatial"}))
    assert cell.estimate.n_eff == pytest.approx(2 * one.estimate.n_eff)  # two equal suites: twice the information


def test_holm_matches_statsmodels_and_the_textbook():
    p = [0.01, 0.04, 0.03, 0.005]
    assert stats.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(3)
    for _ in range(20):
        values = rng.random(rng.integers(1, 8)) ** 2
        assert stats.holm(values) == pytest.approx(multitest.multipletests(values, method="holm")[1])


def test_unpaired_p_value_inverts_the_newcombe_interval():
    a, b = stats.weighted_rate([56], [70]), stats.weighted_rate([48], [80])
    diff = stats.newcombe_difference(a, b)
    low, _ = stats._newcombe_bounds(a, b, 1 - diff.p_value)
    assert low == pytest.approx(0.0, abs=1e-6)
    assert diff.significant == (diff.low > 0) and 0 < diff.p_value < 0.05
    same = stats.newcombe_difference(a, a)
    assert same.p_value == 1.0 and not same.significant


def test_ablation_table_applies_and_states_holm():
    from lamp_bench.reports import layouts
    from lamp_bench.results.aggregate import provenance_summary

    suites = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
    wins = {"lamp": 8, "no-motion": 4, "steps-5": 7, "steps-10": 6}  # of 10 init states per task
    recs = []
    for label, k in wins.items():
        recs += records(label, lambda suite, t, i, s, k=k: i < k, seeds=(0,), suites=suites, tasks=5)
    frame = episode_frame(recs)
    sections = layouts.build_sections(frame, provenance_summary(recs), [], layouts.load_paper_numbers(), False)
    ablation = next(s for s in sections if s.key == "ablation_steps")
    differences = next(t for t in ablation.tables if t.key.endswith("_differences"))
    assert any("Holm's correction for the 3 comparisons" in note for note in differences.notes)
    column = differences.columns.index("LIBERO Avg")
    cells = [row.cells[column] for row in differences.rows]
    assert stats.holm([c.p_value for c in cells]) == pytest.approx([c.p_adjusted for c in cells])
    assert all(c.significant == (c.p_adjusted < 0.05) for c in cells)
    main = next(s for s in sections if s.key == "libero")  # the main table is not an ablation: no correction
    assert all(c.p_adjusted is None for t in main.tables for r in t.rows for c in r.cells
               if isinstance(c, stats.Difference))
