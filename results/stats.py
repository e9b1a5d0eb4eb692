"""Intervals and tests for success rates (numpy/scipy only; vectorised where reports call them often).

Methods, and why:
- One rate: Wilson score interval (good coverage at small n and near 0 or 1, unlike the normal one).
- A mean of rates over strata (the paper's "Average" over suites or tasks): a variance-combination
  Wilson interval. Its variance is sum_s w_s^2 p_s (1 - p_s) / n_s (weights sum to 1); the effective
  sample size n_eff = p (1 - p) / variance, capped at the episodes behind it (Korn & Graubard 1998;
  conservative), is plugged into the Wilson formula. When every stratum is all-success or
  all-failure the variance is 0 and Kish's n_eff = 1 / sum_s (w_s^2 / n_s) is used. With one stratum
  this is exactly the Wilson interval; deterministic, so a report is reproducible.
- Two policies on the same episodes: exact McNemar test on the discordant pairs, and a percentile
  paired bootstrap of the difference (stratified: pairs are resampled within each stratum, then the
  strata are combined with the same weights as the rates). Resampling n pairs of binary outcomes is a
  multinomial draw over the four outcome pairs (only its two discordant cells matter), so the bootstrap
  costs nothing per episode.
- Two policies on different episodes: Newcombe's hybrid score interval (his method 10) of the
  difference, built from the two Wilson-type intervals; labelled unpaired. Its p-value inverts the
  interval (the level at which it just reaches 0), so "significant" and "excludes 0" always agree.
- Several methods against one baseline (an ablation table): Holm's step-down adjustment of the p-values
  of each column's k comparisons (`holm`); a Difference then carries `p_adjusted`, which decides it.
- Episodes that share init states (several seeds): see `results.clustered`; sequential decisions: see
  `results.sequential` (a Difference then carries `decided`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # fixed so the same results give the same report


def _z(confidence: float) -> float:
    return float(sps.norm.ppf(0.5 + confidence / 2))


def wilson_interval(successes, n, confidence: float = CONFIDENCE):
    """Wilson score interval of successes / n (arrays or scalars; n > 0; successes may be fractional)."""
    k = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    if np.any(n <= 0):
        raise ValueError("a Wilson interval needs at least one episode")
    z = _z(confidence)
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # The interval always holds its own rate: at k = n the upper bound computes to 1 - 1e-16, and a
    # bound on the wrong side of the rate makes error bars negative.
    return np.clip(np.minimum(center - half, p), 0.0, 1.0), np.clip(np.maximum(center + half, p), 0.0, 1.0)


@dataclass(frozen=True)
class Estimate:
    """A rate with its interval; n is the episodes behind it, n_eff the size its interval is worth."""

    rate: float
    low: float
    high: float
    n: int
    n_eff: float
    design_effect: float = 1.0  # variance inflation from episodes sharing init states (1: none)


def weighted_rate(successes, n, weights=None, confidence: float = CONFIDENCE, design_effect=None) -> Estimate:
    """Weighted mean of per-stratum rates successes_s / n_s with the variance-combination Wilson interval
    (module docstring). Equal weights give the paper's mean over suites; weights = n give the pooled rate.
    design_effect: per-stratum variance inflation (episodes clustered on init states), default 1."""
    k = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    if k.shape != n.shape or k.ndim != 1 or len(k) == 0:
        raise ValueError("successes and n must be equal-length, non-empty 1-d sequences")
    if np.any(n <= 0):
        raise ValueError("every stratum needs at least one episode")
    w = np.ones_like(n) if weights is None else np.asarray(weights, dtype=float)
    w = w / w.sum()
    deff = np.ones_like(n) if design_effect is None else np.maximum(np.asarray(design_effect, dtype=float), 1.0)
    p_s = k / n
    rate = float(np.dot(w, p_s))
    variance = float(np.sum(w * w * deff * p_s * (1 - p_s) / n))
    kish = 1.0 / float(np.sum(w * w * deff / n))
    n_eff = rate * (1 - rate) / variance if variance > 0 else kish
    n_eff = min(n_eff, float(n.sum()))
    low, high = wilson_interval(rate * n_eff, n_eff, confidence)
    overall = float(n.sum()) / n_eff if design_effect is not None else 1.0
    return Estimate(rate, float(low), float(high), int(n.sum()), n_eff, max(1.0, overall) if design_effect is not None
                    else 1.0)


def mcnemar_exact(b, c):
    """Two-sided exact McNemar p-value from the discordant counts b (only A succeeded) and c (only B)."""
    b = np.asarray(b)
    c = np.asarray(c)
    p = 2 * sps.binom.cdf(np.minimum(b, c), b + c, 0.5)
    return np.minimum(1.0, np.where(b + c == 0, 1.0, p))


@dataclass(frozen=True)
class Difference:
    """Rate of A minus rate of B with its interval; paired tests carry McNemar's p and the pair count."""

    diff: float
    low: float
    high: float
    paired: bool
    n_pairs: int | None = None  # paired episodes (paired only)
    discordant: tuple[int, int] | None = None  # (A only, B only) successes (paired only)
    p_value: float | None = None  # exact McNemar (paired only)
    n_a: int | None = None
    n_b: int | None = None
    p_adjusted: float | None = None  # Holm-adjusted p over the comparisons of its table column
    decided: bool | None = None  # sequential evaluation: its boundary was crossed (None: not sequential)
    clusters: int | None = None  # init-state clusters behind a clustered comparison (None: pairs independent)

    @property
    def significant(self) -> bool:
        """A sequential decision when there is one; else at level 0.05 the Holm-adjusted p when the table
        corrected for several comparisons, else the test's own p (McNemar when paired, the inverted
        Newcombe interval when unpaired)."""
        if self.decided is not None:
            return self.decided
        if self.p_adjusted is not None:
            return self.p_adjusted < ALPHA
        if self.p_value is not None:
            return self.p_value < ALPHA
        return self.low > 0 or self.high < 0


def paired_difference(
    pair_counts,
    weights=None,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Difference:
    """A minus B from per-stratum counts of paired outcomes, rows [n11, n10, n01, n00] (A, B success);
    the difference is the weighted mean of per-stratum differences (weights: equal when None)."""
    counts = np.asarray(pair_counts, dtype=np.int64).reshape(-1, 4)
    n = counts.sum(axis=1)
    if np.any(n <= 0):
        raise ValueError("every stratum needs at least one paired episode")
    w = np.ones(len(counts)) if weights is None else np.asarray(weights, dtype=float)
    w = w / w.sum()
    diff = float(np.dot(w, (counts[:, 1] - counts[:, 2]) / n))
    rng = np.random.default_rng(seed)
    boot = np.zeros(resamples)
    for weight, row, size in zip(w, counts, n):
        # the multinomial's two discordant cells, drawn as a binomial and a conditional binomial
        n10 = rng.binomial(size, row[1] / size, size=resamples)
        rest = size - row[1]
        n01 = rng.binomial(size - n10, row[2] / rest if rest else 0.0)
        boot += weight * (n10 - n01) / size
    low, high = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    b, c = int(counts[:, 1].sum()), int(counts[:, 2].sum())
    return Difference(diff, float(low), float(high), paired=True, n_pairs=int(n.sum()), discordant=(b, c),
                      p_value=float(mcnemar_exact(b, c)))


def _newcombe_bounds(a: Estimate, b: Estimate, confidence: float = CONFIDENCE) -> tuple[float, float]:
    d = a.rate - b.rate
    if confidence == CONFIDENCE:
        a_low, a_high, b_low, b_high = a.low, a.high, b.low, b.high
    else:
        a_low, a_high = wilson_interval(a.rate * a.n_eff, a.n_eff, confidence)
        b_low, b_high = wilson_interval(b.rate * b.n_eff, b.n_eff, confidence)
    low = d - np.sqrt((a.rate - a_low) ** 2 + (b_high - b.rate) ** 2)
    high = d + np.sqrt((a_high - a.rate) ** 2 + (b.rate - b_low) ** 2)
    return float(low), float(high)


def newcombe_p_value(a: Estimate, b: Estimate) -> float:
    """The two-sided level at which Newcombe's interval just reaches 0 (1 when the rates are equal)."""
    from scipy import optimize

    def distance(alpha: float) -> float:  # > 0 while the interval at 1 - alpha excludes 0
        low, high = _newcombe_bounds(a, b, 1 - alpha)
        return max(low, -high)

    if a.rate == b.rate or distance(1 - 1e-9) <= 0:
        return 1.0
    if distance(1e-15) > 0:
        return 1e-15
    return float(optimize.brentq(distance, 1e-15, 1 - 1e-9, xtol=1e-12, rtol=1e-6))


def newcombe_difference(a: Estimate, b: Estimate) -> Difference:
    """Unpaired A minus B: Newcombe's hybrid score interval from the two rates' Wilson-type intervals."""
    low, high = _newcombe_bounds(a, b)
    return Difference(a.rate - b.rate, low, high, paired=False, n_a=a.n, n_b=b.n, p_value=newcombe_p_value(a, b))


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error at most alpha for 'adjusted p < alpha')."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    steps = (len(p) - np.arange(len(p))) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(steps), 1.0)
    return adjusted
