"""Lineage of a table cell: its episodes -> checkpoint hash(es) -> the checkpoint's `lineage.json` (written by
the trainer, models/training/lineage.py) -> training config + trainer commit -> demonstration set identity.

Reads only the records and the checkpoint folders they name (`policy_config.checkpoint`), as JSON. A
lineage file whose checkpoint_hash differs from the records' is `stale` (the folder was retrained or
re-selected after these episodes ran) and is shown as such, never trusted.

Held-out checks, per cell: `on_demo_states` are the (task, init state) pairs the cell evaluated that the
demonstrations of the same suite were collected from (on LIBERO the demos and the benchmark share init
states); `on_selection_states` those that also chose the checkpoint (selection bias).
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from lamp_bench.results.errors import ResultsInputError

LINEAGE_FILE = "lineage.json"
TRAINING_FIELDS = ("policy", "preset", "stage", "stage1_steps", "stage2_steps", "batch_size", "seed", "proprio",
                   "init_checkpoint", "flow_source", "data")


@dataclass(frozen=True)
class CheckpointLineage:
    """One set of weights behind a cell, and what produced it."""

    checkpoint_hash: str | None
    folders: tuple[str, ...]  # checkpoint folders the records name
    episodes: int
    successes: int
    eval_pairs: tuple[tuple[int, int], ...]  # (task, init state) evaluated
    status: str  # ok | missing (no lineage.json) | stale (hash differs) | untrained (no checkpoint folder)
    lineage_file: str | None = None
    code_commit: str | None = None
    training: Mapping[str, Any] = field(default_factory=dict)  # TRAINING_FIELDS of the training config
    demo_set_hash: str | None = None
    demo_suites: tuple[str, ...] = ()
    demo_pairs: tuple[tuple[str, int, int], ...] = ()  # (suite, task, init state) of every demonstration
    collection: Any = None  # the demo set's collection settings (noise, oracle, ...) when recorded
    selection_states: tuple[int, ...] | None = None  # validation init states that chose these weights
    chosen_step: int | None = None
    on_demo_states: tuple[tuple[int, int], ...] = ()
    on_selection_states: tuple[tuple[int, int], ...] = ()
    depth_estimator: Mapping[str, Any] | None = None  # source, weights folder and hash the training lifted with

    @property
    def demo_init_states(self) -> tuple[int, ...]:
        return tuple(sorted({s for _, _, s in self.demo_pairs}))


@dataclass(frozen=True)
class CellLineage:
    label: str
    suite: str
    checkpoints: tuple[CheckpointLineage, ...]

    @property
    def episodes(self) -> int:
        return sum(c.episodes for c in self.checkpoints)


def read_lineage_file(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / LINEAGE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ResultsInputError(f"{path} is not readable JSON ({error}); re-run the training step to rewrite it")
    return data if isinstance(data, dict) else None


def _checkpoint_lineage(checkpoint_hash: str | None, suite: str, records: Sequence[Mapping[str, Any]]) -> CheckpointLineage:
    folders = tuple(sorted({str(r.get("policy_config", {}).get("checkpoint")) for r in records
                            if (r.get("policy_config") or {}).get("checkpoint")}))
    pairs = tuple(sorted({(int(r["task_id"]), int(r["init_index"])) for r in records}))
    base = dict(checkpoint_hash=checkpoint_hash, folders=folders, episodes=len(records),
                successes=sum(bool(r["success"]) for r in records), eval_pairs=pairs)
    if not folders:
        return CheckpointLineage(status="untrained", **base)
    found = [(folder, read_lineage_file(folder)) for folder in folders]
    found = [(folder, data) for folder, data in found if data is not None]
    if not found:
        return CheckpointLineage(status="missing", **base)
    folder, data = found[0]
    if data.get("checkpoint_hash") != checkpoint_hash:
        return CheckpointLineage(status="stale", lineage_file=str(Path(folder) / LINEAGE_FILE), **base)
    config = data.get("training_config") or {}
    files = (data.get("data") or {}).get("files") or []
    demo_pairs = tuple(sorted({(str(f.get("suite")), int(f.get("task_id", -1)), int(s))
                               for f in files for s in f.get("init_states", [])}))
    selection = data.get("selection") or {}
    selected = tuple(selection.get("validation_init_states") or ()) or None
    evaluated_states = {p for p in pairs}
    on_demo = tuple(sorted((t, s) for sx, t, s in demo_pairs if sx == suite and (t, s) in evaluated_states))
    on_select = tuple(sorted(p for p in pairs if selected and p[1] in selected))
    return CheckpointLineage(
        status="ok", lineage_file=str(Path(folder) / LINEAGE_FILE),
        code_commit=(data.get("trainer") or {}).get("code_commit"),
        training={k: config.get(k) for k in TRAINING_FIELDS if k in config},
        demo_set_hash=(data.get("data") or {}).get("demo_set_hash"),
        demo_suites=tuple((data.get("data") or {}).get("suites") or ()), demo_pairs=demo_pairs,
        collection=(data.get("data") or {}).get("collection"), selection_states=selected,
        chosen_step=selection.get("chosen_step"), on_demo_states=on_demo, on_selection_states=on_select,
        depth_estimator=data.get("depth_estimator"), **base)


def cell_lineages(records: Iterable[Mapping[str, Any]]) -> list[CellLineage]:
    """Every label x suite cell of the records, with its checkpoints' lineage, sorted by label and suite."""
    groups: dict[tuple[str, str], dict[str | None, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        groups[(r["label"], r["suite"])][r.get("checkpoint_hash")].append(r)
    return [CellLineage(label, suite, tuple(_checkpoint_lineage(h, suite, rs) for h, rs in sorted(
        by_hash.items(), key=lambda item: str(item[0])))) for (label, suite), by_hash in sorted(groups.items())]


def cell_lineage(records: Iterable[Mapping[str, Any]], label: str, suite: str) -> CellLineage:
    records = list(records)
    chosen = [r for r in records if r["label"] == label and r["suite"] == suite]
    if not chosen:
        cells = sorted({f"{r['label']}/{r['suite']}" for r in records})
        raise ResultsInputError(f"no episodes of label {label!r} on suite {suite!r}; cells: "
                                f"{', '.join(cells[:20]) or 'none'}")
    (cell,) = cell_lineages(chosen)
    return cell


def describe_states(pairs: Sequence[tuple[int, int]]) -> str:
    """(task, init state) pairs as `init states 0-4 of tasks 0,1` when every task has the same states."""
    if not pairs:
        return "none"
    by_task: dict[int, set[int]] = defaultdict(set)
    for t, s in pairs:
        by_task[t].add(s)
    states = {frozenset(v) for v in by_task.values()}
    if len(states) == 1:
        return f"init states {compact(sorted(next(iter(states))))} of tasks {compact(sorted(by_task))}"
    return "; ".join(f"task {t}: {compact(sorted(v))}" for t, v in sorted(by_task.items()))


def compact(ids: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5"."""
    parts, start = [], None
    for i, value in enumerate(ids):
        if start is None:
            start = value
        if i + 1 == len(ids) or ids[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ",".join(parts)
