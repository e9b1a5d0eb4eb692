"""The paper's real-world table from the real-robot trials of a results directory (results/trials.py).

Rows are labels (methods), columns the task types and Overall (success over all of a label's trials,
pooled, as the paper's "82% on 50 trials"), each with its Wilson 95% interval; paper rows and Δ rows come
from paper_numbers.json's "real_world"; the differences table tests every label against the baseline,
paired on trials matched by task type + trial index (exact McNemar, paired bootstrap), unpaired
(Newcombe) where no trial matches. The trials become a frame in the episode frame's shape (suite
"real_world", task_id = task type, init_index = trial index, seed 0) so the simulated tables' cells,
comparisons and rendering apply unchanged.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from lamp_bench.reports.layouts import Context, Row, RowSpec, Section, Table, _values, rate_tables
from lamp_bench.results.aggregate import Column, Provenance
from lamp_bench.results.trials import TrialRecord, TrialStore, current_of

SUITE = "real_world"
PAPER_KEY = "real_world"
PROTOCOL_KEY = "real_world_protocol"
OVERALL = "Overall"


@dataclass(frozen=True)
class Trials:
    """The trials of a results directory as they stand (each trial's latest correction)."""

    records: list[TrialRecord]
    corrections: int  # correction records applied

    @property
    def labels(self) -> list[str]:
        return labels(self.records)

    @property
    def overview(self) -> str:
        return (f"{len(self.records):,} real-robot trial(s) of {len(self.labels)} label(s) in trials/"
                + (f"; {self.corrections} correction(s) applied" if self.corrections else ""))


def load_trials(results_dir: str | Path) -> Trials:
    history = TrialStore(results_dir).history()
    return Trials([current_of(records) for _, records in sorted(history.items())],
                  sum(r.is_correction for records in history.values() for r in records))


def labels(trials: Sequence[TrialRecord]) -> list[str]:
    return sorted({t.label for t in trials})


def trial_frame(trials: Sequence[TrialRecord]) -> pd.DataFrame:
    return pd.DataFrame({
        "label": [t.label for t in trials], "policy": [t.policy for t in trials],
        "suite": SUITE, "task_id": [t.task_type for t in trials], "init_index": [t.trial for t in trials],
        "seed": 0, "success": [bool(t.success) for t in trials], "error": False,
    })


def task_types(trials: Sequence[TrialRecord]) -> list[str]:
    """The plan's order where the records carry one, then any other task types alphabetically."""
    ordered: list[str] = []
    for t in trials:
        for name in (t.plan or {}).get("task_types", []):
            if name not in ordered:
                ordered.append(name)
    present = {t.task_type for t in trials}
    return [n for n in ordered if n in present] + sorted(present - set(ordered))


def _plan_notes(trials: Sequence[TrialRecord]) -> list[str]:
    """Labels short of the plan their trials were recorded under."""
    notes = []
    for label in labels(trials):
        mine = [t for t in trials if t.label == label]
        plans = {json.dumps(t.plan, sort_keys=True) for t in mine if t.plan}
        if len(plans) != 1:
            continue
        plan = json.loads(plans.pop())
        planned = len(plan["task_types"]) * plan["trials_per_task"]
        if len(mine) < planned:
            notes.append(f"{label}: {len(mine)} of {planned} planned trials recorded "
                         f"({', '.join(plan['task_types'])} x {plan['trials_per_task']})")
    return notes


def results_section(trials: Sequence[TrialRecord], paper: dict[str, Any], show_paper: bool,
                    baseline: str | None, corrections: int) -> Section:
    names = labels(trials)
    ctx = Context(trial_frame(trials), Provenance(), paper, show_paper, baseline if baseline in names else None)
    ordered = ctx.labels([SUITE])
    specs = [RowSpec(label, {"label": label}, label, ctx.paper_method(label)) for label in ordered]
    columns = [Column(t, {"task_id": t}) for t in task_types(trials)] + [Column(OVERALL, {})]
    reference = ctx.reference(ordered)
    tables = rate_tables(ctx, "real_world", "Real-world trials: success per task type", "Method", specs, columns,
                         paper.get(PAPER_KEY), ordered.index(reference) if reference else None)
    notes = [f"n = trials. {OVERALL} = success over all of a label's trials (pooled, as the paper's figure), "
             "Wilson 95% interval. Paired comparisons match trials by task type + trial index."]
    protocol = paper.get(PROTOCOL_KEY)
    if show_paper and protocol:
        notes.append(f"Paper protocol: {protocol.get('trials')} trials over {protocol.get('task_types')} task "
                     f"types ({protocol.get('setup')}); it reports the overall rates only.")
    if corrections:
        notes.append(f"{corrections} trial record(s) were corrected; each trial counts with its latest correction "
                     "(history: `lamp-bench trials show RESULTS --history`).")
    return Section("real_world", "Real-world trials", tables, notes + _plan_notes(trials))


def _counts(trials: Sequence[TrialRecord], value: Callable[[TrialRecord], Any]) -> Counter:
    """Distinct values of one provenance field with their trial counts ('–' where a trial has none)."""
    return Counter("–" if value(t) is None else str(value(t)) for t in trials)


def provenance_section(trials: Sequence[TrialRecord]) -> Section:
    rows, warnings = [], []
    for label in labels(trials):
        mine = [t for t in trials if t.label == label]
        commits = _counts(mine, lambda t: t.provenance.get("code_commit"))
        servers = _counts(mine, lambda t: json.dumps(t.server_metadata, sort_keys=True) if t.server_metadata else None)
        rows.append(Row(label, "text", [_values(_counts(mine, lambda t: t.policy)), f"{len(mine):,}",
                                        _values(_counts(mine, lambda t: t.checkpoint_hash), 16), _values(commits, 18),
                                        _values(_counts(mine, lambda t: t.operator)),
                                        _values(_counts(mine, lambda t: t.provenance.get("host"))),
                                        _values(servers, 120, 2)]))
        if len(commits) > 1:
            warnings.append(f"label {label}'s trials were recorded from {len(commits)} code commits")
        if any(c.endswith("-dirty") for c in commits):
            warnings.append(f"label {label}'s trials were recorded from a commit with uncommitted changes (-dirty)")
    table = Table("real_world_provenance", "Real-world trials: provenance", "Label",
                  ["policy", "trials", "checkpoint sha256", "code commit", "operators", "hosts", "server metadata"],
                  rows)
    return Section("real_world_provenance", "Real-world trials: provenance", [table], warnings, plot="none")


def build_sections(trials: Trials, paper: dict[str, Any], show_paper: bool = True,
                   baseline: str | None = None) -> list[Section]:
    """The real-world sections (results, provenance); none without trials."""
    if not trials.records:
        return []
    return [results_section(trials.records, paper, show_paper, baseline, trials.corrections),
            provenance_section(trials.records)]
