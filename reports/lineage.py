"""The report's lineage section: for every cell, its checkpoint, the training run and the demonstrations
behind it (results/lineage.py), with notes where a cell is not held out (evaluated on init states the
demonstrations or the checkpoint selection used) or its lineage is missing or stale."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from lamp_bench.reports.layouts import Row, Section, Table
from lamp_bench.results.lineage import CellLineage, cell_lineages, compact, describe_states

COLUMNS = ["episodes", "checkpoint", "training", "trainer commit", "demo set", "demo init states",
           "selected on", "evaluated on", "held out"]


def _held_out(c) -> str:
    if c.status != "ok":
        return "unknown"
    if c.on_selection_states:
        return "no: selection states"
    if c.on_demo_states:
        return f"no: {len(c.on_demo_states)} demo states"
    return "yes"


def _training(training: Mapping[str, Any]) -> str:
    steps = f"{training.get('stage1_steps')}+{training.get('stage2_steps')} steps"
    return f"{training.get('policy')} {training.get('preset')}, stage {training.get('stage')}, {steps}, seed {training.get('seed')}"


def _rows(cell: CellLineage) -> list[Row]:
    rows = []
    for c in cell.checkpoints:
        name = f"{cell.label} / {cell.suite}" + (f" ({str(c.checkpoint_hash)[:8]})" if len(cell.checkpoints) > 1 else "")
        if c.status != "ok":
            values = [str(c.episodes), str(c.checkpoint_hash or "none")[:16], c.status, "", "", "", "",
                      describe_states(c.eval_pairs), _held_out(c)]
        else:
            values = [str(c.episodes), str(c.checkpoint_hash)[:16], _training(c.training), str(c.code_commit)[:18],
                      str(c.demo_set_hash)[:16], compact(list(c.demo_init_states)) or "none",
                      compact(sorted(c.selection_states)) if c.selection_states else "(no selection)",
                      describe_states(c.eval_pairs), _held_out(c)]
        rows.append(Row(name, "text", values))
    return rows


def _notes(cells: list[CellLineage]) -> list[str]:
    notes = []
    for cell in cells:
        for c in cell.checkpoints:
            where = f"{cell.label} on {cell.suite}"
            if c.on_selection_states:
                notes.append(f"{where}: evaluated on init states that selected its checkpoint "
                             f"({describe_states(c.on_selection_states)}): biased upwards")
            if c.on_demo_states:
                notes.append(f"{where}: evaluated on {len(c.on_demo_states)} (task, init state) pairs its "
                             f"demonstrations were recorded from ({describe_states(c.on_demo_states)}): not a held-out "
                             "result (on LIBERO the demonstrations and the benchmark share init states)")
            if c.status == "stale":
                notes.append(f"{where}: the checkpoint folder's lineage.json describes other weights ({c.lineage_file})")
    return notes


def build_sections(records: Iterable[Mapping[str, Any]]) -> list[Section]:
    """One section, only when some cell was evaluated from a checkpoint folder (trained weights)."""
    cells = [cell for cell in cell_lineages(records) if any(c.folders for c in cell.checkpoints)]
    if not cells:
        return []
    rows = [row for cell in cells for row in _rows(cell)]
    table = Table("lineage", "Lineage: checkpoint, training run and demonstrations behind every cell", "Cell",
                  COLUMNS, rows)
    notes = _notes(cells) + ["`lamp-bench lineage RESULTS --label L --suite S` prints one cell's full chain "
                             "(training config, demonstration files and their collection settings)."]
    return [Section("lineage", "Lineage", [table], notes, plot="none")]
