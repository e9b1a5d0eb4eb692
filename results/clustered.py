"""Intervals that respect the design: episodes that share an init state are not independent.

When several seeds rerun the same fixed init states (OpenVLA: 3 seeds x 500 episodes over the same 50
states per task), an easy state tends to be easy for every seed, so n episodes carry less information
than n independent ones. The unit that is sampled is the init state, so inference clusters on
(suite, task, init state):

- A rate: the Wilson interval with the effective size n / deff, where the design effect deff is the
  cluster-robust (sandwich) variance of the rate over the simple-random-sampling one,
  deff = [J/(J-1) sum_j (y_j - m_j p)^2 / n^2] / [p(1-p)/(n-1)]  (y_j successes of the m_j episodes of
  cluster j; both variances with their small-sample correction, so deff = 1 for one episode per state), floored at 1 (repeating a state never adds information; below 1 is sampling noise).
  A mean over strata (suites, tasks) takes each stratum's deff into its variance
  (`stats.weighted_rate(..., design_effect=)`), so averages combine correctly.
- A paired difference: a cluster bootstrap (whole init states resampled within each stratum, strata
  combined with the table's weights; percentile interval) and the clustered McNemar test of Durkalski
  et al. (2003), z = sum_j d_j / sqrt(sum_j d_j^2) with d_j = (A-only minus B-only successes) of
  cluster j, which is McNemar's statistic when every cluster has one pair.

With one episode per init state nothing changes (the callers use the plain methods then), so reports
without repeated init states keep their numbers. Coverage is checked by simulation in
tests/test_clustered.py.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from lamp_bench.results import stats

CLUSTER_KEY = ("suite", "task_id", "init_index")


def cluster_codes(frame: pd.DataFrame) -> np.ndarray:
    """An integer per (suite, task, init state) of each row."""
    keys = [c for c in CLUSTER_KEY if c in frame.columns]
    if not keys or frame.empty:
        return np.arange(len(frame))
    return frame.groupby(keys, sort=False, observed=True, dropna=False).ngroup().to_numpy()


def repeats_init_states(frame: pd.DataFrame) -> bool:
    """Whether some init state appears more than once among these episodes (several seeds). Reports ask
    this of every cell, so it is one hash pass (~1 ms per 10k episodes)."""
    keys = [c for c in CLUSTER_KEY if c in frame.columns]
    return bool(keys) and len(frame) > 1 and bool(frame.duplicated(keys).any())


def design_effects(cluster_successes, cluster_sizes) -> np.ndarray:
    """deff per row of cluster_successes (S x J successes; J cluster sizes, the same for every row)."""
    y = np.atleast_2d(np.asarray(cluster_successes, dtype=float))
    m = np.asarray(cluster_sizes, dtype=float)
    n, clusters = m.sum(), len(m)
    p = y.sum(axis=1) / n
    robust = clusters / max(clusters - 1, 1) * ((y - np.outer(p, m)) ** 2).sum(axis=1) / n ** 2
    simple = p * (1 - p) / max(n - 1, 1)  # the same small-sample correction as the robust one
    with np.errstate(invalid="ignore", divide="ignore"):
        deff = np.where(simple > 0, robust / simple, 1.0)
    return np.maximum(deff, 1.0)


def clustered_wilson(cluster_successes, cluster_sizes, confidence: float = stats.CONFIDENCE):
    """Design-effect Wilson interval per row (vectorised over simulations): (low, high, deff)."""
    y = np.atleast_2d(np.asarray(cluster_successes, dtype=float))
    m = np.asarray(cluster_sizes, dtype=float)
    deff = design_effects(y, m)
    n_eff = m.sum() / deff
    low, high = stats.wilson_interval(y.sum(axis=1) / deff, n_eff, confidence)
    return low, high, deff


def _per_cluster(outcome: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sizes = np.bincount(codes)
    return np.bincount(codes, weights=outcome.astype(float)), sizes


def clustered_rate(sub: pd.DataFrame, outcome: str, strata: str | None) -> stats.Estimate:
    """A cell's rate (pooled, or the equal-weight mean over `strata`) with design-effect intervals."""
    hits = sub[outcome].astype(bool).to_numpy()
    groups = [np.ones(len(sub), dtype=bool)] if strata is None else [
        (sub[strata].astype(object) == value).to_numpy() for value in pd.unique(sub[strata].astype(object))]
    k, n, deff = [], [], []
    for mask in groups:
        y, m = _per_cluster(hits[mask], pd.factorize(cluster_codes(sub[mask]))[0])
        k.append(y.sum())
        n.append(m.sum())
        deff.append(float(design_effects(y, m)[0]))
    return stats.weighted_rate(k, n, design_effect=deff)


def cluster_bootstrap(cluster_diffs, cluster_sizes, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates (resamples x S) of sum(d) / sum(m) with whole clusters resampled; one weight
    matrix serves every row of cluster_diffs (S x J), which keeps simulations vectorised."""
    d = np.atleast_2d(np.asarray(cluster_diffs, dtype=float))
    m = np.asarray(cluster_sizes, dtype=float)
    clusters = len(m)
    weights = rng.multinomial(clusters, np.full(clusters, 1 / clusters), size=resamples).astype(float)
    return (weights @ d.T) / (weights @ m)[:, None]


def durkalski_p(cluster_diffs) -> float:
    """Two-sided p of the clustered McNemar test from per-cluster (A only - B only) counts."""
    d = np.asarray(cluster_diffs, dtype=float)
    spread = float((d * d).sum())
    if spread == 0:
        return 1.0
    return float(2 * sps.norm.sf(abs(d.sum()) / np.sqrt(spread)))


def clustered_paired_difference(ya: np.ndarray, yb: np.ndarray, codes: np.ndarray, strata: np.ndarray,
                                confidence: float = stats.CONFIDENCE, resamples: int = stats.BOOTSTRAP_RESAMPLES,
                                seed: int = stats.BOOTSTRAP_SEED) -> stats.Difference:
    """A minus B over paired episodes clustered by init state (codes) within strata (equal weights)."""
    rng = np.random.default_rng(seed)
    diff_pairs = ya.astype(int) - yb.astype(int)
    levels = pd.unique(strata)
    weight = 1.0 / len(levels)
    estimate, boot, all_d = 0.0, np.zeros(resamples), []
    for level in levels:
        mask = strata == level
        local = pd.factorize(codes[mask])[0]
        d = np.bincount(local, weights=diff_pairs[mask].astype(float))
        m = np.bincount(local).astype(float)
        estimate += weight * d.sum() / m.sum()
        boot += weight * cluster_bootstrap(d, m, resamples, rng)[:, 0]
        all_d.append(d)
    low, high = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    b, c = int((ya & ~yb).sum()), int((~ya & yb).sum())
    return stats.Difference(float(estimate), float(low), float(high), paired=True, n_pairs=len(ya), discordant=(b, c),
                            p_value=durkalski_p(np.concatenate(all_d)),
                            clusters=int(sum(len(d) for d in all_d)))
