"""Intervals and tests of results/stats.py against published values, statsmodels/scipy and simulation."""
import numpy as np
import pytest
from scipy import stats as sps

from lamp_bench.results import stats

GRID = [(0, 1), (0, 20), (1, 29), (15, 148), (81, 263), (10, 10), (37, 50), (499, 500)]


def test_wilson_matches_published_examples():
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (score interval)
    for (k, n), (low, high) in {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605),
                                (0, 20): (0.0, 0.1611), (1, 29): (0.0061, 0.1718)}.items():
        lo, hi = stats.wilson_interval(k, n)
        assert (round(float(lo), 4), round(float(hi), 4)) == (low, high)


def test_wilson_matches_statsmodels():
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    k, n = np.array(GRID).T
    lo, hi = stats.wilson_interval(k, n)
    for i, (ki, ni) in enumerate(GRID):
        expected = proportion.proportion_confint(ki, ni, alpha=0.05, method="wilson")
        assert (lo[i], hi[i]) == pytest.approx(expected, abs=1e-12)
    lo90, _ = stats.wilson_interval(81, 263, confidence=0.9)
    assert lo90 == pytest.approx(proportion.proportion_confint(81, 263, alpha=0.1, method="wilson")[0], abs=1e-12)


def test_wilson_rejects_empty():
    with pytest.raises(ValueError, match="at least one episode"):
        stats.wilson_interval(0, 0)


def test_mcnemar_exact_matches_binomial_test_and_statsmodels():
    for b, c in [(0, 0), (5, 1), (1, 5), (4, 0), (12, 30), (100, 80)]:
        p = float(stats.mcnemar_exact(b, c))
        expected = 1.0 if b + c == 0 else sps.binomtest(b, b + c, 0.5).pvalue
        assert p == pytest.approx(expected, rel=1e-12)
    assert float(stats.mcnemar_exact(5, 1)) == pytest.approx(14 / 64)  # 2 * (1 + 6) / 2**6
    tables = pytest.importorskip("statsmodels.stats.contingency_tables")
    for b, c in [(5, 1), (12, 30), (100, 80)]:
        assert float(stats.mcnemar_exact(b, c)) == pytest.approx(tables.mcnemar([[7, b], [c, 9]], exact=True).pvalue)


def test_newcombe_matches_published_example_and_statsmodels():
    # Newcombe (1998), Statistics in Medicine 17:873, example (a) 56/70 - 48/80, method 10
    diff = stats.newcombe_difference(stats.weighted_rate([56], [70]), stats.weighted_rate([48], [80]))
    assert (diff.diff, round(diff.low, 4), round(diff.high, 4)) == (pytest.approx(0.2), 0.0524, 0.3339)
    assert not diff.paired and diff.significant
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    for k1, n1, k2, n2 in [(9, 10, 3, 10), (0, 30, 2, 25), (45, 50, 44, 50)]:
        d = stats.newcombe_difference(stats.weighted_rate([k1], [n1]), stats.weighted_rate([k2], [n2]))
        expected = proportion.confint_proportions_2indep(k1, n1, k2, n2, method="newcomb", compare="diff")
        assert (d.low, d.high) == pytest.approx(expected, abs=1e-12)


def test_weighted_rate_reduces_to_wilson():
    one = stats.weighted_rate([37], [50])
    assert (one.low, one.high) == pytest.approx(tuple(map(float, stats.wilson_interval(37, 50))))
    assert one.n_eff == pytest.approx(50)
    # equal strata with equal rates: the pooled Wilson interval over all episodes
    same = stats.weighted_rate([30, 30, 30, 30], [50, 50, 50, 50])
    assert same.rate == pytest.approx(0.6)
    assert (same.low, same.high) == pytest.approx(tuple(map(float, stats.wilson_interval(120, 200))))


def test_weighted_rate_is_mean_of_rates_with_sensible_edges():
    est = stats.weighted_rate([18, 15, 12, 6], [20, 20, 20, 20])
    assert est.rate == pytest.approx((0.9 + 0.75 + 0.6 + 0.3) / 4)
    unequal = stats.weighted_rate([9, 30], [10, 100])  # mean of 0.9 and 0.3, not the pooled 39/110
    assert unequal.rate == pytest.approx(0.6)
    assert unequal.low < 0.6 < unequal.high
    allwin = stats.weighted_rate([10, 20], [10, 20])  # zero variance: Kish's n_eff, never a zero-width interval
    assert allwin.rate == 1.0 and allwin.high == 1.0 and allwin.low < 1.0
    assert allwin.n_eff == pytest.approx(1 / (0.25 / 10 + 0.25 / 20))
    weighted = stats.weighted_rate([9, 30], [10, 100], weights=[10, 100])  # episode weights: the pooled rate
    assert weighted.rate == pytest.approx(39 / 110)


def test_weighted_rate_coverage_by_simulation():
    """The documented aggregate interval covers the true mean of four suite rates ~95% of the time."""
    rng = np.random.default_rng(1)
    p, n = np.array([0.9, 0.75, 0.55, 0.3]), np.array([50, 50, 50, 50])
    truth = p.mean()
    draws = rng.binomial(n, p, size=(2000, 4))
    covered = [e.low <= truth <= e.high for e in (stats.weighted_rate(k, n) for k in draws)]
    assert 0.93 <= np.mean(covered) <= 0.975


def test_paired_difference_counts_bootstrap_and_mcnemar():
    # rows: n11, n10 (A only), n01 (B only), n00
    d = stats.paired_difference([[60, 25, 10, 105]])
    n = 200
    assert d.diff == pytest.approx(15 / n)
    assert d.paired and d.n_pairs == n and d.discordant == (25, 10)
    assert d.p_value == pytest.approx(sps.binomtest(10, 35, 0.5).pvalue)
    assert d.significant == (d.p_value < 0.05)
    # the bootstrap interval agrees with the large-sample paired interval
    se = np.sqrt((35 / n - (15 / n) ** 2) / n)
    assert d.low == pytest.approx(d.diff - 1.96 * se, abs=0.01)
    assert d.high == pytest.approx(d.diff + 1.96 * se, abs=0.01)
    assert stats.paired_difference([[60, 25, 10, 105]]) == d  # seeded: same data, same report


def test_paired_difference_stratified_and_degenerate():
    d = stats.paired_difference([[10, 4, 0, 6], [0, 0, 10, 10]])  # +0.2 in one stratum, -0.5 in the other
    assert d.diff == pytest.approx((0.2 - 0.5) / 2)
    assert d.discordant == (4, 10) and d.n_pairs == 40
    same = stats.paired_difference([[7, 0, 0, 3]])  # no discordant pair: no difference, p = 1
    assert (same.diff, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert not same.significant
    with pytest.raises(ValueError, match="paired episode"):
        stats.paired_difference([[0, 0, 0, 0]])
