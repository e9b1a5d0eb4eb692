"""One experiment's rate tables: the measured table (with the paper's rows and measured minus published
Δ rows) and the differences of every method against the reference, optionally Holm-corrected."""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from lamp_bench.reports.table_model import Delta, Row, RowSpec, Table
from lamp_bench.results import stats
from lamp_bench.results.aggregate import MIN_EPISODES, Cell, Column, compare, measure

if TYPE_CHECKING:  # layouts builds its sections with these tables
    from lamp_bench.reports.layouts import Context


def _missing_notes(table_rows: list[Row], columns: list[str]) -> list[str]:
    notes = []
    for row in table_rows:
        gaps: dict[str, list[str]] = {}
        for column, cell in zip(columns, row.cells):
            if isinstance(cell, Cell) and cell.missing:
                gaps.setdefault(cell.missing, []).append(column)
        for reason, cols in gaps.items():
            notes.append(f"– {row.name}: {reason} ({', '.join(cols)})")
    return notes


def _quality_notes(table_rows: list[Row], columns: list[str]) -> list[str]:
    notes = []
    for row in table_rows:
        flagged = [c for c, cell in zip(columns, row.cells) if isinstance(cell, Cell) and cell.flagged]
        if flagged:
            notes.append(f"† {row.name}: fewer than {MIN_EPISODES} episodes behind {', '.join(flagged)}; "
                         "the rate is not reliable")
        errors = max((cell.errors for cell in row.cells if isinstance(cell, Cell)), default=0)
        if errors:
            notes.append(f"{row.name}: {errors} episode(s) ended in an error and count as failures "
                         "(reasons in the records' failure_reason)")
        incomplete = [c for c, cell in zip(columns, row.cells) if isinstance(cell, Cell) and cell.incomplete]
        if incomplete:
            env_errors = max(cell.env_errors for cell in row.cells if isinstance(cell, Cell))
            notes.append(f"‡ {row.name}: incomplete: {env_errors} episode(s) ended in an environment error (the "
                         f"simulator, not the policy) and are left out of {', '.join(incomplete)}; re-run the "
                         "same command to retry them")
    return notes


def rate_tables(ctx: Context, key: str, title: str, stub: str, specs: list[RowSpec], columns: list[Column],
                paper: dict[str, dict[str, float]] | None, reference: int | None,
                paper_names: dict[str, str] | None = None, holm: bool = False) -> list[Table]:
    """The measured table (with paper and Δ rows) and the differences-vs-reference table (holm: correct
    each column's comparisons for multiplicity)."""
    paper_names = paper_names or {}
    names = [c.name for c in columns]
    measured = []
    for spec in specs:
        if spec.missing:
            cells = [Cell(missing=spec.missing) for _ in columns]
        else:
            cells = [measure(ctx.frame, spec.where, column) for column in columns]
        measured.append(Row(spec.name, "measured", cells, spec.label, spec.ref))
    rows = list(measured)
    notes = _missing_notes(measured, names) + _quality_notes(measured, names)
    if any(isinstance(c, Cell) and c.estimate is not None and c.estimate.design_effect > 1 for r in measured
           for c in r.cells):
        notes += CLUSTER_NOTE
    if ctx.show_paper and paper:
        for method, values in paper.items():
            rows.append(Row(f"paper: {paper_names.get(method, method)}", "paper", [values.get(c) for c in names],
                            ref=method))
        unreported = [c for c in names if all(c not in v for v in paper.values())]
        if unreported:
            notes.append(f"– paper rows: the paper reports no number for {', '.join(unreported)}")
        for row in measured:
            published = paper.get(row.ref) if row.ref else None
            if not published:
                continue
            deltas = []
            for column, cell in zip(names, row.cells):
                value = published.get(column)
                if value is None or not isinstance(cell, Cell) or cell.estimate is None:
                    deltas.append(None)
                    continue
                est = cell.estimate
                deltas.append(Delta(100 * est.rate - value, est.low <= value / 100 <= est.high))
            rows.append(Row(f"Δ {row.name} − paper {paper_names.get(row.ref, row.ref)}", "delta", deltas, row.label,
                            row.ref))
    tables = [Table(key, title, stub, names, rows, notes)]
    if reference is not None and len(specs) > 1 and not specs[reference].missing:
        ref = specs[reference]
        diff_rows, other_group = [], []
        for spec in specs:
            if spec is ref or spec.missing:
                continue
            if spec.group != ref.group:
                other_group.append(spec.name)
                continue
            diffs = [compare(ctx.frame, spec.where, ref.where, column) for column in columns]
            diff_rows.append(Row(f"{spec.name} − {ref.name}", "difference", diffs, spec.label))
        if other_group:
            notes.append(f"not tested against {ref.name} (another backend): {', '.join(other_group)}")
        if diff_rows:
            diff_notes = ["paired: exact McNemar p on the discordant episodes and a paired bootstrap 95% "
                          "interval, over the episodes both ran; unpaired: Newcombe hybrid score "
                          "interval; * significant at 0.05"]
            diff_notes += CLUSTER_NOTE if any(getattr(c, "clusters", None) for r in diff_rows for c in r.cells) else []
            if holm:
                diff_rows = holm_rows(diff_rows)
                diff_notes.append(f"Holm's correction for the {len(diff_rows)} comparisons against {ref.name} in "
                                  "each column: * marks a Holm-adjusted p < 0.05 (the p shown is unadjusted)")
            tables.append(Table(f"{key}_differences", f"{title}: differences vs {ref.name} (percentage points)",
                                "Comparison", names, diff_rows, diff_notes))
    return tables


CLUSTER_NOTE = ["where seeds repeat init states, episodes are clustered on (suite, task, init state): rates use "
                "a design-effect Wilson interval, paired differences a cluster bootstrap and the clustered "
                "McNemar test (Durkalski 2003)"]


def holm_rows(rows: list[Row]) -> list[Row]:
    """Each column's comparisons (one baseline vs k methods) with Holm-adjusted p-values."""
    for column in range(len(rows[0].cells) if rows else 0):
        tested = [r for r in rows if isinstance(r.cells[column], stats.Difference) and r.cells[column].p_value is not None]
        adjusted = stats.holm([r.cells[column].p_value for r in tested])
        for row, p in zip(tested, adjusted):
            row.cells[column] = replace(row.cells[column], p_adjusted=float(p))
    return rows

