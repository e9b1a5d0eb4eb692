"""Group-sequential paired comparisons: evaluate in rounds, stop as soon as the answer is known.

Method: a group-sequential test with Lan-DeMets alpha spending (O'Brien-Fleming type by default) on the
McNemar score statistic z = (b - c) / sqrt(b + c) of the paired episodes (b: only A succeeded, c: only
B). At look k, with n_k of the budget's N pairs done (information fraction t_k = n_k / N), the test has
spent alpha(t_k) of its alpha; the boundary c_k is the z with P_H0(first crossing at look k) = alpha(t_k)
- alpha(t_{k-1}), computed by the recursive numerical integration of Armitage, McPherson & Rowe (1969)
over the Brownian-motion limit of the score process (Jennison & Turnbull 2000, ch. 19). The comparison
is *decided* at the first look with |z_k| >= c_k; the interval reported at that look is the repeated
confidence interval (the Tango 1998 score interval for a paired difference, inverted at c_k instead of
1.96), which excludes 0 exactly when the test decides, and the p-value is the repeated p-value (the
smallest alpha whose boundaries the look crosses).

Why this and not an anytime-valid confidence sequence: an evaluation's budget is known in advance (a
suite has a finite pool of fixed init states, 50 per LIBERO task), so the one thing a confidence
sequence buys -- no maximum sample size -- is not needed, and it costs a lot: a sequence valid for
every n to infinity is much wider at any given n, so it needs far more episodes for the same power.
An O'Brien-Fleming design needs only ~2-3% more episodes at its maximum than a fixed-size test and
stops early when the gap is large. Alpha spending (rather than fixed Pocock/OBF boundaries) lets rounds
be of any size and number, decided as the run goes (a round that comes back short because of errors is
fine), and its power is computable by the same recursion, so `lamp-bench plan` predicts it.

Caveats: the boundaries come from the normal limit of the score statistic (validated by simulation in
tests/test_sequential.py: type-I error <= alpha, power as planned); the budget must be fixed before the
first look (extending it afterwards voids the guarantee; the decision file records the design and a
resumed run must use the same one).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import optimize
from scipy import stats as sps

from lamp_bench.results import stats
from lamp_bench.results.errors import ResultsInputError

SPENDING = ("obrien-fleming", "pocock")
MAX_Z = 8.0  # a boundary never needed (P(|Z| > 8) ~ 1e-15): used when a look spends no alpha
SEQUENTIAL_DIR = "sequential"


def spent(t, alpha: float, spending: str = "obrien-fleming"):
    """Two-sided alpha spent by information fraction t (Lan-DeMets)."""
    t = np.clip(np.asarray(t, dtype=float), 1e-12, 1.0)
    if spending == "obrien-fleming":
        return 2 * sps.norm.sf(sps.norm.isf(alpha / 2) / np.sqrt(t))
    if spending == "pocock":
        return alpha * np.log1p((np.e - 1) * t)
    raise ValueError(f"unknown alpha-spending function {spending!r}; choose from {', '.join(SPENDING)}")


class _Recursion:
    """Density of the Brownian motion X(t) = W(t) + drift * t on a grid, restricted to the paths that have
    not crossed the boundaries |X(t_j)| >= u_j at earlier looks; one `step` per look."""

    def __init__(self, drift: float, points_per_sd: int = 24):
        self.drift = drift
        self.points_per_sd = points_per_sd
        self.t = 0.0
        self.x = np.zeros(1)  # the start: a point mass at 0
        self.w = np.ones(1)  # probability weights of the grid points

    def crossing(self, t: float, u: float) -> float:
        """P(not crossed before, |X(t)| >= u) for the next look at time t with boundary u."""
        mean, sd = self.x + self.drift * (t - self.t), np.sqrt(t - self.t)
        return float(np.dot(self.w, sps.norm.sf((u - mean) / sd) + sps.norm.cdf((-u - mean) / sd)))

    def step(self, t: float, u: float) -> float:
        """Move to the look at time t with boundary u; returns its crossing probability."""
        cross = self.crossing(t, u)
        sd = np.sqrt(t - self.t)
        h = sd / self.points_per_sd
        mean = self.x + self.drift * (t - self.t)
        # the grid covers the continuation region only where the mass can be (8 sd beyond the last grid)
        low, high = max(-u, mean.min() - 8 * sd), min(u, mean.max() + 8 * sd)
        if high <= low:  # every path crossed
            self.x, self.w, self.t = np.zeros(1), np.zeros(1), t
            return cross
        cells = max(2, int(np.ceil((high - low) / h)))
        edges = np.linspace(low, high, cells + 1)
        # exact mass of each cell (differences of the normal cdf), so the weights stay probabilities
        cdf = sps.norm.cdf((edges[:, None] - mean[None, :]) / sd)
        self.w = (cdf[1:] - cdf[:-1]) @ self.w
        self.x = (edges[1:] + edges[:-1]) / 2
        self.t = t
        return cross


def boundaries(t: Sequence[float], alpha: float = 0.05, spending: str = "obrien-fleming") -> np.ndarray:
    """Two-sided z boundaries c_k at information fractions t_1 < ... < t_K (the last one may be 1)."""
    t = np.asarray(t, dtype=float)
    if len(t) == 0 or np.any(np.diff(t) <= 0) or t[0] <= 0 or t[-1] > 1 + 1e-12:
        raise ValueError("information fractions must increase within (0, 1]")
    increments = np.diff(np.concatenate([[0.0], spent(t, alpha, spending)]))
    walk = _Recursion(0.0)
    out = np.empty(len(t))
    for k, (tk, spend) in enumerate(zip(t, increments)):
        if spend <= 1e-15 or walk.crossing(tk, MAX_Z * np.sqrt(tk)) >= spend:
            out[k] = MAX_Z
        elif walk.crossing(tk, 0.0) <= spend:  # (alpha near 1) even a boundary at 0 spends less
            out[k] = 0.0
        else:
            out[k] = optimize.brentq(lambda c: walk.crossing(tk, c * np.sqrt(tk)) - spend, 0.0, MAX_Z, xtol=1e-7)
        walk.step(tk, out[k] * np.sqrt(tk))
    return out


@dataclass(frozen=True)
class Operating:
    """What a design does under an assumed truth: the chance to decide and the episodes it takes."""

    power: float  # P(decided by the budget)
    expected_n: float  # mean pairs at stopping
    stop_by_look: tuple[float, ...]  # P(decided at look k)


def operating(n: Sequence[int], budget: int, delta: float, discordance: float, alpha: float = 0.05,
              spending: str = "obrien-fleming") -> Operating:
    """Power and expected size of the paired McNemar group-sequential test with looks after n_1 < ... <=
    budget pairs, when A - B = delta and a fraction `discordance` of pairs differ (normal limit: the
    score sum has drift delta and variance discordance - delta^2 per pair; z divides it by
    sqrt(n * discordance))."""
    n = np.asarray(n, dtype=float)
    t = n / budget
    c = boundaries(t, alpha, spending)
    variance = discordance - delta * delta
    if variance <= 0:  # every pair discordant the same way: decided at the first look that can
        return Operating(1.0, float(n[0]), (1.0,) + (0.0,) * (len(n) - 1))
    scale = np.sqrt(variance / discordance)  # sd of z under the alternative
    walk = _Recursion(abs(delta) * np.sqrt(budget / variance))
    stops = [walk.step(tk, ck * np.sqrt(tk) / scale) for tk, ck in zip(t, c)]
    power = float(sum(stops))
    expected = float(np.dot(stops, n) + (1 - power) * n[-1])
    return Operating(power, expected, tuple(stops))


# --- one look on observed pairs ---------------------------------------------------------------------------

def mcnemar_z(b, c):
    """(b - c) / sqrt(b + c), 0 where there is no discordant pair (vectorised)."""
    b, c = np.asarray(b, dtype=float), np.asarray(c, dtype=float)
    m = b + c
    return np.where(m > 0, (b - c) / np.sqrt(np.maximum(m, 1)), 0.0)


def _restricted_p01(b: int, c: int, n: int, delta: float) -> float:
    """Maximum-likelihood P(only B succeeds) when P(only A) - P(only B) is held at delta (Tango 1998)."""
    r = n - b - c
    linear = b * (1 - delta) + c * (1 - 3 * delta) - 2 * r * delta
    return (linear + np.sqrt(linear * linear + 8 * n * c * delta * (1 - delta))) / (4 * n)


def score_z(b: int, c: int, n: int, delta: float) -> float:
    """Tango's score statistic for H: P(A only) - P(B only) = delta; at delta = 0 it is McNemar's z."""
    q = max(_restricted_p01(b, c, n, delta), 0.0)
    variance = n * (2 * q + delta * (1 - delta))
    if variance <= 0:
        return 0.0 if b - c == n * delta else float(np.sign(b - c - n * delta)) * np.inf
    return float((b - c - n * delta) / np.sqrt(variance))


def score_interval(b: int, c: int, n: int, critical: float) -> tuple[float, float]:
    """{delta: |score_z| < critical}: Tango's interval for a paired difference at the given critical z."""
    estimate = (b - c) / n
    edge = 1 - 1e-12
    low = -edge if score_z(b, c, n, -edge) < critical else optimize.brentq(
        lambda d: score_z(b, c, n, d) - critical, -edge, estimate, xtol=1e-10)
    high = edge if score_z(b, c, n, edge) > -critical else optimize.brentq(
        lambda d: score_z(b, c, n, d) + critical, estimate, edge, xtol=1e-10)
    return float(low), float(high)


@dataclass(frozen=True)
class Look:
    n: int  # pairs at this look
    b: int  # A only succeeded
    c: int  # B only succeeded
    z: float
    boundary: float

    @property
    def crossed(self) -> bool:
        return abs(self.z) >= self.boundary


@dataclass
class Design:
    budget: int  # pairs at most
    round_size: int
    alpha: float = 0.05
    spending: str = "obrien-fleming"

    def look_sizes(self) -> list[int]:
        return list(range(self.round_size, self.budget, self.round_size)) + [self.budget]


def evaluate_looks(design: Design, counts: Sequence[tuple[int, int, int]], final: bool = False) -> list[Look]:
    """Looks so far from (n, b, c) after each round; `final`: the last one ends the evaluation (the pool or
    the budget is exhausted) and spends all the remaining alpha."""
    n = [k[0] for k in counts]
    t = [min(size / design.budget, 1.0) for size in n]
    if final:
        t[-1] = 1.0
    c = boundaries(t, design.alpha, design.spending)
    return [Look(size, b, cc, float(mcnemar_z(b, cc)), float(bound)) for (size, b, cc), bound in zip(counts, c)]


def repeated_p_value(design: Design, looks: Sequence[Look], final: bool = False) -> float:
    """Smallest alpha at which the last look's boundary (same spending family) is crossed."""
    last = looks[-1]
    if last.b + last.c == 0:
        return 1.0
    t = [min(look.n / design.budget, 1.0) for look in looks]
    if final:
        t[-1] = 1.0

    def margin(alpha: float) -> float:
        return abs(last.z) - boundaries(t, alpha, design.spending)[-1]

    if margin(1 - 1e-9) < 0:
        return 1.0
    if margin(1e-12) >= 0:
        return 1e-12
    return float(optimize.brentq(margin, 1e-12, 1 - 1e-9, xtol=1e-6, rtol=1e-4))


# --- the decision file the report reads ---------------------------------------------------------------------

@dataclass
class Decision:
    """The state of one sequential comparison (label - against), written after every look."""

    label: str
    against: str
    suite: str
    design: Design
    looks: list[Look] = field(default_factory=list)
    decided: bool = False
    finished: bool = False  # decided, or the budget / the pool ran out
    diff: float = 0.0
    low: float = -1.0
    high: float = 1.0
    p_value: float = 1.0  # repeated p-value at the last look

    @property
    def n(self) -> int:
        return self.looks[-1].n if self.looks else 0

    def summary(self) -> str:
        if not self.looks:
            return f"{self.label} vs {self.against} on {self.suite}: no look yet"
        state = (f"decided at n={self.n}" if self.decided else
                 f"undecided at the budget ({self.n} of {self.design.budget} pairs)" if self.finished else
                 f"undecided so far (n={self.n} of {self.design.budget})")
        return (f"{self.label} − {self.against} on {self.suite}: {100 * self.diff:+.1f} points, repeated "
                f"{100 * (1 - self.design.alpha):g}% interval [{100 * self.low:+.1f}, {100 * self.high:+.1f}], {state}")


def decide(decision: Decision, counts: Sequence[tuple[int, int, int]], exhausted: bool) -> Decision:
    """Recompute every look from the cumulative (n, b, c) counts; the evaluation stops at the first
    crossing (later counts, if any, are ignored: they were never looked at)."""
    looks = evaluate_looks(decision.design, counts, final=exhausted)
    crossed = next((i for i, look in enumerate(looks) if look.crossed), None)
    if crossed is not None:
        looks = looks[:crossed + 1]
    final = exhausted and crossed is None
    last = looks[-1]
    low, high = score_interval(last.b, last.c, last.n, last.boundary)
    decision.looks = looks
    decision.decided = crossed is not None
    decision.finished = decision.decided or final
    decision.diff = (last.b - last.c) / last.n
    decision.low, decision.high = low, high
    decision.p_value = repeated_p_value(decision.design, looks, final)
    return decision


def decision_path(results_dir: str | Path, label: str, against: str, suite: str) -> Path:
    return Path(results_dir) / SEQUENTIAL_DIR / f"{label}-vs-{against}-{suite}.json"


def save_decision(results_dir: str | Path, decision: Decision) -> Path:
    path = decision_path(results_dir, decision.label, decision.against, decision.suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(decision), indent=2) + "\n")
    temporary.replace(path)  # atomic: a reader never sees half a file
    return path


def _decision_from(data: dict, path: Path) -> Decision:
    try:
        design = Design(**data["design"])
        looks = [Look(**look) for look in data["looks"]]
        fields_ = {k: data[k] for k in ("label", "against", "suite", "decided", "finished", "diff", "low", "high",
                                        "p_value")}
    except (KeyError, TypeError) as error:
        raise ResultsInputError(f"sequential decision file {path} is malformed ({error}); delete it and re-run") from None
    return Decision(design=design, looks=looks, **fields_)


def load_decision(path: Path) -> Decision:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ResultsInputError(f"sequential decision file {path} is not valid JSON ({error}); delete it and re-run") from None
    return _decision_from(data, path)


def load_decisions(results_dir: str | Path) -> list[Decision]:
    """Every <results_dir>/sequential/*.json, sorted by file name."""
    folder = Path(results_dir) / SEQUENTIAL_DIR
    return [load_decision(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def as_difference(decision: Decision) -> stats.Difference:
    """The comparison as the report's tables hold one: the repeated interval, decided or not."""
    last = decision.looks[-1]
    return stats.Difference(decision.diff, decision.low, decision.high, paired=True, n_pairs=last.n,
                            discordant=(last.b, last.c), p_value=decision.p_value, decided=decision.decided)


def comparison_grid(decisions: Sequence[Decision]) -> list[tuple[str, list[str], list[tuple[str, str, list]]]]:
    """Per baseline: (baseline, suites, rows of (name, label, one Difference or None per suite))."""
    out = []
    for against in sorted({d.against for d in decisions}):
        group = [d for d in decisions if d.against == against and d.looks]
        suites = sorted({d.suite for d in group})
        rows = []
        for label in sorted({d.label for d in group}):
            found = {d.suite: as_difference(d) for d in group if d.label == label}
            rows.append((f"{label} − {against}", label, [found.get(suite) for suite in suites]))
        if rows:
            out.append((against, suites, rows))
    return out
