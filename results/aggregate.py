"""From episode records to rates: cells of a table, paired/unpaired differences, summaries, provenance.

A *cell* is the success of one row (a method: records selected by label, ...) in one column (episodes
selected by suite, category, task, ...). A plain column pools its episodes (one Wilson interval); an
*averaged* column is the mean of per-stratum rates with equal weights (the paper's "Average" over
suites or tasks), with the variance-combination interval of `stats.weighted_rate`. Outcomes are those of
results.record: a policy error counts as a failure and is counted in `Cell.errors`; an environment error
is never a failure: it is left out of every rate and counted in `Cell.env_errors`, and a cell that has
any is `incomplete` (re-run to retry them).
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from lamp_bench.results import clustered, stats
from lamp_bench.results.errors import ResultsInputError
from lamp_bench.results.record import ENV_ERROR, LEGACY_ERROR, POLICY_ERROR
from lamp_bench.results.store import EpisodeStore

MIN_EPISODES = 10  # a rate over fewer episodes (in any stratum of an average) is flagged as unreliable
PAIR_KEY = ("suite", "task_id", "init_index", "seed")  # the same episode for two methods


CATEGORICAL = ("label", "policy", "suite", "status", "task_name", "checkpoint_hash")


def episode_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per episode: the store's flat view with `success` as bool and an `error` column. Label-like
    text columns are categorical: tables select on them hundreds of times, and string compares are slow."""
    frame = EpisodeStore.frame(records)
    if frame.empty:
        return frame
    frame["success"] = frame["success"].astype(bool)
    frame["error"] = frame["status"].isin([POLICY_ERROR, LEGACY_ERROR])  # the policy's fault: a failure
    frame["env_error"] = frame["status"].eq(ENV_ERROR)  # the simulator's fault: in no rate
    for column in frame.columns:
        if column in CATEGORICAL or column.startswith("info.") and pd.api.types.is_string_dtype(frame[column]):
            frame[column] = frame[column].astype("category")
    return frame


Where = Mapping[str, Any]  # frame column -> value, or a tuple/list/set of accepted values


def select(frame: pd.DataFrame, where: Where) -> np.ndarray:
    mask = np.ones(len(frame), dtype=bool)
    for column, value in where.items():
        if column not in frame.columns:
            return np.zeros(len(frame), dtype=bool)
        values = frame[column]
        if isinstance(value, (tuple, list, set, frozenset)):
            mask &= values.isin(list(value)).to_numpy()
        else:
            mask &= (values == value).to_numpy()
    return mask


@dataclass(frozen=True)
class Column:
    """Which episodes a column covers and how they are combined."""

    name: str
    where: Where = field(default_factory=dict)
    outcome: str = "success"  # a bool column of the frame (success, info.partial_success, ...)
    strata: str | None = None  # mean of per-stratum rates over this frame column (equal weights)
    required: tuple = ()  # strata that must all be present for the mean to be shown


@dataclass(frozen=True)
class Cell:
    estimate: stats.Estimate | None = None
    successes: int | None = None  # pooled cells only
    errors: int = 0
    strata: int = 1
    flagged: bool = False  # fewer than MIN_EPISODES episodes (in some stratum)
    missing: str | None = None  # why there is no number
    env_errors: int = 0  # episodes left out: unresolved environment errors

    @property
    def incomplete(self) -> bool:
        """Unresolved environment errors: the number covers only the episodes that have a result."""
        return self.env_errors > 0


def _outcomes(frame: pd.DataFrame, mask: np.ndarray, column: Column) -> pd.DataFrame:
    """The column's episodes of a row, with only the fields a cell or a comparison reads."""
    if column.outcome not in frame.columns:
        return frame.iloc[:0]
    fields = list(dict.fromkeys([*PAIR_KEY, column.outcome, "error", *([column.strata] if column.strata else [])]))
    resolved = ~frame["env_error"].to_numpy() if "env_error" in frame.columns else True
    sub = frame.loc[mask & select(frame, column.where) & resolved, [f for f in fields if f in frame.columns]]
    return sub[sub[column.outcome].notna()]


def measure(frame: pd.DataFrame, row: Where, column: Column) -> Cell:
    """The cell of the episodes selected by `row` and `column`, with their unresolved env errors."""
    cell = _measure_resolved(frame, row, column)
    if "env_error" not in frame.columns:
        return cell
    env_errors = int((select(frame, row) & select(frame, column.where) & frame["env_error"].to_numpy()).sum())
    if not env_errors:
        return cell
    return replace(cell, env_errors=env_errors, missing="only environment errors" if cell.missing == "no episodes"
                   else cell.missing)


def _measure_resolved(frame: pd.DataFrame, row: Where, column: Column) -> Cell:
    """The cell over the episodes that have a result (env errors left out)."""
    sub = _outcomes(frame, select(frame, row), column)
    if sub.empty:
        return Cell(missing="no episodes")
    hits = sub[column.outcome].astype(bool)
    errors = int(sub["error"].sum()) if "error" in sub else 0
    if column.strata is None:
        k, n = int(hits.sum()), len(sub)
        estimate = stats.weighted_rate([k], [n])
        if clustered.repeats_init_states(sub):  # seeds repeat init states: cluster on them
            estimate = clustered.clustered_rate(sub, column.outcome, None)
        return Cell(estimate, k, errors, 1, n < MIN_EPISODES)
    groups = hits.groupby(sub[column.strata].astype(object).to_numpy())
    k, n = groups.sum(), groups.size()
    absent = [s for s in column.required if s not in n.index]
    if absent:
        return Cell(missing=f"needs {', '.join(map(str, absent))}", errors=errors)
    estimate = stats.weighted_rate(k.to_numpy(), n.to_numpy())
    if clustered.repeats_init_states(sub):  # seeds repeat init states: cluster on them
        estimate = clustered.clustered_rate(sub, column.outcome, column.strata)
    return Cell(estimate, None, errors, len(n), bool((n < MIN_EPISODES).any()))


def compare(frame: pd.DataFrame, row_a: Where, row_b: Where, column: Column) -> stats.Difference | None:
    """A minus B in `column`. Paired (McNemar + paired bootstrap) over the episodes both ran, when every
    stratum the column needs has such pairs; otherwise unpaired (Newcombe). None when a side is missing."""
    a = _outcomes(frame, select(frame, row_a), column)
    b = _outcomes(frame, select(frame, row_b), column)
    if a.empty or b.empty:
        return None
    cols = [*PAIR_KEY, column.outcome] + ([column.strata] if column.strata and column.strata not in PAIR_KEY else [])
    pairs = a[cols].merge(b[list(PAIR_KEY) + [column.outcome]], on=list(PAIR_KEY), suffixes=("_a", "_b"))
    strata_key = column.strata or "_all"
    if not pairs.empty:
        if column.strata is None:
            pairs[strata_key] = 0
        ya = pairs[f"{column.outcome}_a"].astype(bool).to_numpy()
        yb = pairs[f"{column.outcome}_b"].astype(bool).to_numpy()
        kind = np.where(ya, np.where(yb, 0, 1), np.where(yb, 2, 3))  # n11, n10, n01, n00
        codes, strata = pd.factorize(pairs[strata_key].astype(object))
        counts = np.bincount(codes * 4 + kind, minlength=4 * len(strata)).reshape(-1, 4)
        if all(s in set(strata) for s in column.required):
            if clustered.repeats_init_states(pairs):  # seeds repeat init states: cluster on them
                return clustered.clustered_paired_difference(ya, yb, clustered.cluster_codes(pairs),
                                                             pairs[strata_key].astype(object).to_numpy())
            return stats.paired_difference(counts)
    cell_a, cell_b = measure(frame, row_a, column), measure(frame, row_b, column)
    if cell_a.estimate is None or cell_b.estimate is None:
        return None
    return stats.newcombe_difference(cell_a.estimate, cell_b.estimate)


def summary(records: Iterable[Mapping[str, Any]], per_task: bool = True) -> pd.DataFrame:
    """Success per label and suite (task_id "all"), then per task, with episode counts and 95% Wilson
    intervals in percent; `flag` marks fewer than MIN_EPISODES episodes. `episodes` counts those with a
    result (policy errors, in `errors`, among them); `env_errors` are left out of the rate and make the
    row `incomplete`."""
    frame = episode_frame(records)
    columns = ["label", "suite", "task_id", "task_name", "episodes", "successes", "errors", "env_errors",
               "success_%", "ci95_low_%", "ci95_high_%", "flag", "incomplete"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    if "task_name" not in frame:
        frame["task_name"] = ""
    frame["_resolved"] = ~frame["env_error"]
    counts = dict(episodes=("_resolved", "sum"), successes=("success", "sum"), errors=("error", "sum"),
                  env_errors=("env_error", "sum"), task_name=("task_name", "first"))
    suites = frame.groupby(["label", "suite"], observed=True).agg(**counts).reset_index()
    parts = [suites.assign(task_id="all", task_name="", _order=0)]
    if per_task:
        tasks = frame.groupby(["label", "suite", "task_id"], observed=True).agg(**counts).reset_index()
        parts.append(tasks.assign(_order=tasks["task_id"] + 1))
    out = pd.concat(parts, ignore_index=True).sort_values(["label", "suite", "_order"], kind="stable")
    low, high = stats.wilson_interval(out["successes"], out["episodes"].clip(lower=1))
    scored = out["episodes"] > 0  # a row of env errors alone has no rate
    low, high = np.where(scored, low, np.nan), np.where(scored, high, np.nan)
    out["success_%"] = (100 * out["successes"] / out["episodes"].where(scored)).round(1)
    out["ci95_low_%"], out["ci95_high_%"] = (100 * low).round(1), (100 * high).round(1)
    out["flag"] = np.where(out["episodes"] < MIN_EPISODES, f"n<{MIN_EPISODES}", "")
    out["incomplete"] = out["env_errors"] > 0
    out["task_id"] = out["task_id"].astype(str)
    return out[columns].reset_index(drop=True)


# --- provenance -------------------------------------------------------------------------------------------

BASE_PROVENANCE = ("code_commit", "host", "python", "versions", "mujoco_warning", "suite")


@dataclass
class Provenance:
    """Distinct provenance values (with episode counts) per label and per suite."""

    labels: dict[str, dict[str, Counter]] = field(default_factory=dict)  # label -> field -> value -> count
    suites: dict[str, dict[str, Counter]] = field(default_factory=dict)  # suite -> field -> value -> count
    hosts: Counter = field(default_factory=Counter)


def _flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif value is not None:
        out[prefix] = value if isinstance(value, str) else json.dumps(value)


def provenance_summary(records: Iterable[Mapping[str, Any]]) -> Provenance:
    """Distinct provenance first (records of one run share it; dict equality is cheap, serialising is not),
    then flatten each distinct one once."""
    groups: dict[tuple, list[list]] = {}  # cheap hashable identity -> [[provenance, policy_config, count], ...]
    for r in records:
        prov = r.get("provenance") or {}
        config = r.get("policy_config")
        key = (r["label"], r["suite"], r.get("policy"), r.get("checkpoint_hash"), prov.get("host"),
               prov.get("code_commit"))
        entries = groups.setdefault(key, [])
        for entry in entries:
            if entry[0] == prov and entry[1] == config:
                entry[2] += 1
                break
        else:
            entries.append([prov, config, 1])
    out = Provenance()
    for (label, suite, policy, checkpoint, host, commit), entries in groups.items():
        per_label = out.labels.setdefault(label, defaultdict(Counter))
        per_suite = out.suites.setdefault(suite, defaultdict(Counter))
        for prov, config, count in entries:
            per_label["policy"][str(policy)] += count
            per_label["checkpoint_hash"][str(checkpoint)] += count
            per_label["policy_config"][json.dumps(config, sort_keys=True, default=str)] += count
            per_label["code_commit"][str(commit)] += count
            out.hosts[str(host)] += count
            flat: dict[str, str] = {}
            _flatten({k: v for k, v in prov.items() if k not in ("host", "code_commit")}, "", flat)
            for field_name, value in flat.items():
                per_suite[field_name][value] += count
    return out


# --- `lamp-bench profile` outputs ---------------------------------------------------------------------------

PROFILE_COMPONENTS = ("vision", "depth", "lift", "flow", "cross_attention", "prefill", "decode")


@dataclass(frozen=True)
class Profile:
    path: Path
    policy: str
    preset: str | None
    batch: int | None
    components_ms: dict[str, float]
    total_ms: float
    ratio_to_no_motion: float | None
    extra: dict[str, Any]


def load_profiles(results_dir: str | Path) -> list[Profile]:
    """Every <results_dir>/profile/*.json; a malformed file is an error naming the file and the problem."""
    folder = Path(results_dir) / "profile"
    profiles = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ResultsInputError(f"profile file {path} is not valid JSON ({error}); re-run `lamp-bench profile`") from None
        if not isinstance(data, dict) or "policy" not in data or "total_ms" not in data:
            raise ResultsInputError(f"profile file {path} lacks 'policy' or 'total_ms'; is it a `lamp-bench profile` output?")
        components = data.get("components_ms") or {}
        try:
            components = {k: float(v) for k, v in components.items() if v is not None}
            total = float(data["total_ms"])
            ratio = data.get("ratio_to_no_motion")
            ratio = None if ratio is None else float(ratio)
        except (TypeError, ValueError, AttributeError):
            raise ResultsInputError(f"profile file {path} has non-numeric timings; expected milliseconds") from None
        known = {"policy", "preset", "batch", "components_ms", "total_ms", "ratio_to_no_motion"}
        profiles.append(Profile(path, str(data["policy"]), data.get("preset"), data.get("batch"), components, total,
                                ratio, {k: v for k, v in data.items() if k not in known}))
    return profiles
