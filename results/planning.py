"""How many episodes a paired comparison needs, and the smallest gap a budget can detect.

Two policies run on the same episodes (task, init state, seed), so what decides the comparison is the
*discordance* psi = P(exactly one of them succeeds): with A - B = delta, the paired score sum has drift
delta and variance psi - delta^2 per pair. The fixed-size McNemar test at two-sided level alpha then
needs (Connor 1987)

    n = (z_{1-alpha/2} sqrt(psi) + z_{power} sqrt(psi - delta^2))^2 / delta^2   pairs,

and the group-sequential design of `results.sequential` (K equally spaced looks, alpha spending) needs
the budget N whose power, computed by the same recursion the test uses, reaches the target; it also
has an expected size (it usually stops before N when delta is real).

Where psi comes from: a pilot results directory (the observed share of discordant pairs per suite), a
given psi, or assumed success rates with a correlation rho between the two policies' outcomes on an
episode (rho = 0: independent outcomes, the most discordance, the most conservative). A gap delta needs
psi >= delta (every pair that makes the gap is discordant), so psi is never taken below delta.

The paper's "Average" over four suites is the mean of the per-suite differences; with n pairs in each
of k suites its score statistic is McNemar's over all k*n pairs with the mean discordance, so it needs
n = N(delta, mean psi) / k per suite.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps

from lamp_bench.results import clustered, sequential
from lamp_bench.results.errors import ResultsInputError

LIBERO_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
LIBERO_POOL = 500  # distinct (task, init state) episodes per LIBERO suite and seed: 10 tasks x 50 init states
PAIR_KEY = ("suite", "task_id", "init_index", "seed")

DiscordanceModel = Callable[[float], float]  # delta -> psi under the alternative


class PlanningError(ResultsInputError):
    """Inputs that admit no plan (a pilot with no shared episodes, rates that cannot give the gap...)."""


def fixed_pairs(delta: float, psi: float, alpha: float, power: float) -> int:
    """Pairs the fixed-size two-sided McNemar test needs to detect delta with the given power."""
    psi = max(psi, delta)
    za, zb = sps.norm.isf(alpha / 2), sps.norm.ppf(power)
    return max(1, math.ceil((za * math.sqrt(psi) + zb * math.sqrt(max(psi - delta * delta, 0.0))) ** 2 / delta ** 2))


def fixed_power(n: int, delta: float, psi: float, alpha: float) -> float:
    psi = max(psi, delta)
    variance = psi - delta * delta
    za = sps.norm.isf(alpha / 2)
    if variance <= 0:
        return 1.0 if math.sqrt(n) * delta / math.sqrt(psi) >= za else 0.0
    return float(sps.norm.sf((za * math.sqrt(psi) - math.sqrt(n) * delta) / math.sqrt(variance)))


def equal_looks(budget: int, looks: int) -> list[int]:
    """Look sizes of K (nearly) equal rounds up to the budget."""
    return sorted({max(1, round(budget * k / looks)) for k in range(1, looks + 1)})


@functools.lru_cache(maxsize=4096)  # the suites of one plan often share their assumptions
def _operating(budget: int, looks: int, delta: float, psi: float, alpha: float, spending: str) -> sequential.Operating:
    return sequential.operating(equal_looks(budget, looks), budget, delta, psi, alpha, spending)


@dataclass(frozen=True)
class SequentialPlan:
    budget: int  # pairs at most
    looks: int
    power: float  # achieved at that budget
    expected_n: float  # mean pairs at stopping when delta is true


def sequential_pairs(delta: float, psi: float, alpha: float, power: float, looks: int,
                     spending: str = "obrien-fleming") -> SequentialPlan:
    """Smallest budget whose group-sequential test (K equal looks) reaches the power."""
    psi = max(psi, delta)
    start = fixed_pairs(delta, psi, alpha, power)
    if looks <= 1:
        return SequentialPlan(start, 1, fixed_power(start, delta, psi, alpha), float(start))

    def run(budget: int) -> sequential.Operating:
        return _operating(budget, looks, delta, psi, alpha, spending)

    low, high = start - 1, start
    while run(high).power < power:  # the sequential design needs more than the fixed one
        low, high = high, math.ceil(high * 1.1) + 1
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if run(middle).power >= power else (middle, high)
    result = run(high)
    return SequentialPlan(high, len(equal_looks(high, looks)), result.power, result.expected_n)


def detectable_delta(n: int, model: DiscordanceModel, alpha: float, power: float, max_delta: float,
                     looks: int = 1, spending: str = "obrien-fleming") -> float | None:
    """Smallest delta in (0, max_delta] that n pairs detect with the given power (None: none does)."""
    def achieved(delta: float) -> float:
        psi = max(model(delta), delta)
        if looks <= 1:
            return fixed_power(n, delta, psi, alpha)
        return _operating(n, looks, delta, psi, alpha, spending).power

    if n < 1 or achieved(max_delta) < power:
        return None
    return float(optimize.brentq(lambda d: achieved(d) - power, 1e-6, max_delta, xtol=1e-5))


# --- where the discordance comes from -----------------------------------------------------------------------

def discordance_from_rates(p_a: float, p_b: float, correlation: float = 0.0) -> float:
    """P(exactly one succeeds) for success rates p_a, p_b whose outcomes correlate by `correlation`
    (the joint success clipped to what the rates allow)."""
    both = p_a * p_b + correlation * math.sqrt(p_a * (1 - p_a) * p_b * (1 - p_b))
    both = min(max(both, max(0.0, p_a + p_b - 1)), min(p_a, p_b))
    return p_a + p_b - 2 * both


@dataclass(frozen=True)
class PilotPairs:
    suite: str
    n: int  # pairs
    a_only: int
    b_only: int
    design_effect: float = 1.0  # variance inflation of the paired difference when seeds repeat init states

    @property
    def discordance(self) -> float:
        return (self.a_only + self.b_only) / self.n

    @property
    def difference(self) -> float:
        return (self.a_only - self.b_only) / self.n


def pilot_pairs(frame: pd.DataFrame, label_a: str, label_b: str) -> list[PilotPairs]:
    """Per suite, the episodes both labels ran (same suite, task, init state, seed) and who won them.
    frame: `aggregate.episode_frame` of the pilot's records."""
    labels = set(frame["label"].astype(str)) if not frame.empty else set()
    absent = [label for label in (label_a, label_b) if label not in labels]
    if absent:
        raise PlanningError(f"the pilot has no episodes of {', '.join(map(repr, absent))}; "
                            f"its labels: {', '.join(sorted(labels)) or 'none'}")
    keys = list(PAIR_KEY)
    a = frame.loc[frame["label"].astype(str) == label_a, keys + ["success"]]
    b = frame.loc[frame["label"].astype(str) == label_b, keys + ["success"]]
    pairs = a.merge(b, on=keys, suffixes=("_a", "_b"))
    if pairs.empty:
        raise PlanningError(f"{label_a!r} and {label_b!r} share no episode (suite, task, init state, seed) in the "
                            "pilot: run both on the same episodes (same --tasks, --episodes-per-task, --seed)")
    out = []
    for suite, group in pairs.groupby(pairs["suite"].astype(str), sort=True):
        ya, yb = group["success_a"].astype(bool).to_numpy(), group["success_b"].astype(bool).to_numpy()
        out.append(PilotPairs(str(suite), len(group), int((ya & ~yb).sum()), int((~ya & yb).sum()),
                              pair_design_effect(group, ya.astype(int) - yb.astype(int))))
    return out


def pair_design_effect(pairs: pd.DataFrame, d: np.ndarray) -> float:
    """Cluster-robust over independent-pairs variance of the mean paired difference (1 when every init
    state is paired once); it multiplies the episodes a plan needs when seeds repeat init states."""
    if not clustered.repeats_init_states(pairs):
        return 1.0
    sums = np.bincount(clustered.cluster_codes(pairs), weights=d.astype(float))
    sizes = np.bincount(clustered.cluster_codes(pairs)).astype(float)
    n, clusters, mean = len(d), len(sums), d.mean()
    robust = clusters / max(clusters - 1, 1) * ((sums - sizes * mean) ** 2).sum() / n ** 2
    simple = d.var(ddof=1) / n if n > 1 else 0.0
    return max(1.0, robust / simple) if simple > 0 else 1.0


# --- the plan -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlanRow:
    name: str  # a suite, or "average of k suites"
    suites: tuple[str, ...]
    discordance: float  # assumed psi (mean over suites for an average)
    pilot_pairs: int | None
    pilot_difference: float | None
    delta: float | None
    fixed_n: int | None  # pairs per suite (= episodes per policy per suite)
    sequential: SequentialPlan | None  # budget per suite
    detectable_fixed: float | None  # smallest delta the given episodes per suite detect
    detectable_sequential: float | None
    note: str = ""


def plan_row(name: str, suites: Sequence[str], model: DiscordanceModel, delta: float | None, alpha: float,
             power: float, episodes: int | None, looks: int, max_delta: float,
             pilot: Sequence[PilotPairs] = ()) -> PlanRow:
    """One row: k suites (k > 1: their average) with the discordance model of their mean psi."""
    k = len(suites)
    notes = []
    fixed = seq = None
    psi_at = model(delta) if delta is not None else model(0.0)
    if delta is not None:
        if psi_at < delta:
            notes.append(f"discordance raised to Δ={delta:.3f} (a gap needs at least that many discordant pairs)")
        fixed = math.ceil(fixed_pairs(delta, psi_at, alpha, power) / k)
        plan = sequential_pairs(delta, psi_at, alpha, power, looks)
        seq = SequentialPlan(math.ceil(plan.budget / k), plan.looks, plan.power, plan.expected_n / k)
        need = seq.budget if seq.budget > fixed else fixed
        if any(s in LIBERO_SUITES for s in suites) and need > LIBERO_POOL:
            notes.append(f"over {LIBERO_POOL} per LIBERO suite: seeds must repeat init states, and the design "
                         "effect of that clustering raises the need further")
    mde_fixed = mde_seq = None
    if episodes is not None:
        mde_fixed = detectable_delta(episodes * k, model, alpha, power, max_delta)
        mde_seq = detectable_delta(episodes * k, model, alpha, power, max_delta, looks) if looks > 1 else mde_fixed
    pairs = sum(p.n for p in pilot) if pilot else None
    diff = float(np.mean([p.difference for p in pilot])) if pilot else None
    deff = max((p.design_effect for p in pilot), default=1.0)
    if deff > 1.05:
        notes.append(f"the pilot's seeds repeat init states: design effect {deff:.2f}, so episodes that repeat "
                     f"states count ~{1 / deff:.2f} each")
    if pilot and sum(p.a_only + p.b_only for p in pilot) < 10:
        notes.append("fewer than 10 discordant pilot pairs: the discordance is poorly known")
    return PlanRow(name, tuple(suites), max(psi_at, delta or 0.0), pairs, diff, delta, fixed, seq, mde_fixed,
                   mde_seq, "; ".join(notes))


@dataclass(frozen=True)
class Plan:
    alpha: float
    power: float
    looks: int
    spending: str
    source: str  # pilot | discordance | rates
    rows: list[PlanRow]


def validate(delta: float | None, alpha: float, power: float, episodes: int | None, looks: int,
             delta_from_rates: bool = False) -> None:
    """One line per bad input; delta_from_rates: Δ may still come from --rates."""
    if delta is not None and not 0 < delta < 1:
        raise PlanningError(f"Δ (--delta) must be a difference of success rates in (0, 1), e.g. 0.05 for 5 points; "
                            f"got {delta}")
    if not 0 < alpha < 1:
        raise PlanningError(f"α (--alpha) must lie in (0, 1), e.g. 0.05; got {alpha}")
    if not 0 < power < 1:
        raise PlanningError(f"power (--power) must lie in (0, 1), e.g. 0.8; got {power}")
    if episodes is not None and episodes < 1:
        raise PlanningError(f"--episodes must be at least 1; got {episodes}")
    if looks < 1:
        raise PlanningError(f"--looks must be at least 1; got {looks}")
    if delta is None and episodes is None and not delta_from_rates:
        raise PlanningError("give --delta D (episodes needed to detect D) and/or --episodes N (smallest detectable Δ)")


def average_suites(suites: Sequence[str]) -> list[str]:
    """The paper's average is over the four LIBERO suites; without any of them, over every suite given."""
    libero = [s for s in suites if s in LIBERO_SUITES]
    return libero or list(suites)


def plan_from_pilot(pilot: Sequence[PilotPairs], delta: float | None, alpha: float, power: float,
                    episodes: int | None, looks: int) -> Plan:
    validate(delta, alpha, power, episodes, looks)
    order = {suite: i for i, suite in enumerate(LIBERO_SUITES)}  # the paper's suite order, then the rest
    pilot = sorted(pilot, key=lambda p: (order.get(p.suite, len(order)), p.suite))
    rows = [plan_row(p.suite, [p.suite], lambda d, psi=p.discordance: psi, delta, alpha, power, episodes, looks,
                     1 - 1e-6, [p]) for p in pilot]
    chosen = [p for p in pilot if p.suite in average_suites([q.suite for q in pilot])]
    if len(chosen) > 1:
        mean_psi = float(np.mean([p.discordance for p in chosen]))
        rows.append(plan_row(f"average ({len(chosen)} suites)", [p.suite for p in chosen], lambda d: mean_psi, delta,
                             alpha, power, episodes, looks, 1 - 1e-6, chosen))
    return Plan(alpha, power, looks, "obrien-fleming", "pilot", rows)


def plan_from_assumption(suites: Sequence[str], delta: float | None, alpha: float, power: float,
                         episodes: int | None, looks: int, rates: tuple[float, float] | None = None,
                         correlation: float = 0.0, discordance: float | None = None) -> Plan:
    """Every suite under the same assumption: a given discordance, or rates (A's rate is the baseline of a
    detectable-Δ search: B = A + Δ) with a correlation."""
    if rates is not None and not all(0 <= r <= 1 for r in rates):
        raise PlanningError(f"--rates must be two success rates in [0, 1], e.g. 0.80,0.85; got {rates}")
    if not -1 <= correlation <= 1:
        raise PlanningError(f"--correlation must lie in [-1, 1]; got {correlation}")
    if discordance is not None and not 0 < discordance <= 1:
        raise PlanningError(f"--discordance must lie in (0, 1]; got {discordance}")
    if delta is None and rates is not None:
        delta = abs(rates[1] - rates[0])
        if delta == 0:
            raise PlanningError("--rates are equal, so they imply no gap: give --delta D, or two different rates")
    validate(delta, alpha, power, episodes, looks)
    if discordance is not None:
        model: DiscordanceModel = lambda d: discordance  # noqa: E731
        max_delta, source = discordance, "discordance"
    elif rates is not None:
        base = min(rates)  # B = the lower rate + Δ: with Δ = the rates' own gap, exactly the rates given
        model = lambda d: discordance_from_rates(base, min(base + d, 1.0), correlation)  # noqa: E731
        max_delta, source = 1 - base, "rates"
        if max_delta <= 0:
            raise PlanningError("--rates leave no room for a gap (a rate of 1): give lower rates")
    else:
        raise PlanningError("give --pilot RUNS --labels A,B, or --rates pA,pB, or --discordance PSI")
    rows = [plan_row(s, [s], model, delta, alpha, power, episodes, looks, max_delta) for s in suites]
    chosen = average_suites(suites)
    if len(chosen) > 1:
        rows.append(plan_row(f"average ({len(chosen)} suites)", chosen, model, delta, alpha, power, episodes, looks,
                             max_delta))
    return Plan(alpha, power, looks, "obrien-fleming", source, rows)
