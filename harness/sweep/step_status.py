"""`lamp-bench status` for a sweep's steps: demos and training beside the cells, blocked cells with the
reason, and the held-out flags. Reads `<out>/jobs/steps.json`, each step's step.json, the plan and squeue."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lamp_bench.harness.sweep.step_runs import FAILED, FINISHED, RUNNING, STEP_FILE, STEPS_FILE, SUBMITTED, read_step  # noqa: F401
from lamp_bench.harness.sweep.steps import cell_step


@dataclass(frozen=True)
class StepStatus:
    key: str
    status: str  # finished | running | submitted | failed | died | pending
    detail: str  # result or error
    job_id: str | None
    blocks: tuple[str, ...]  # cells (label/suite) that evaluate this step's checkpoint


def _cells_by_step(out: Path) -> dict[str, list[str]]:
    plan = Path(out) / "jobs" / "plan.json"
    if not plan.is_file():
        return {}
    cells: dict[str, list[str]] = {}
    for cell in json.loads(plan.read_text()).get("cells", []):
        key = cell_step(_Cell(cell.get("policy_kwargs") or {}))
        if key:
            cells.setdefault(key, []).append(f"{cell['label']}/{cell['suite']}")
    return cells


@dataclass(frozen=True)
class _Cell:
    policy_kwargs: dict[str, Any]


def _detail(state: dict[str, Any]) -> str:
    if state.get("status") == FINISHED:
        result = state.get("result") or {}
        return ", ".join(f"{k} {str(v)[:16] if k == 'checkpoint_hash' else v}" for k, v in result.items()
                         if k != "checkpoint")
    return str(state.get("error") or "")


def steps_status(out: str | Path) -> tuple[list[StepStatus], list[str]]:
    """The steps of the sweep in `out` (dependency order) and its held-out flags; ([], []) without steps."""
    from lamp_bench.harness.executors import LIVE_SLURM_STATES, slurm_states

    path = Path(out) / "jobs" / STEPS_FILE
    if not path.is_file():
        return [], []
    graph = json.loads(path.read_text())
    by_step = _cells_by_step(Path(out))
    states = {key: read_step(Path(folder)) for key, folder in graph["folders"].items()}
    jobs = [s["job_id"] for s in states.values() if s.get("job_id") and s.get("status") in (SUBMITTED, RUNNING)]
    live = slurm_states(jobs) if jobs else {}
    rows = []
    for key in graph["order"]:
        state = states.get(key, {})
        status = state.get("status") or "pending"
        job = state.get("job_id")
        if status in (SUBMITTED, RUNNING) and job and live is not None and live.get(str(job)) not in LIVE_SLURM_STATES:
            status = "died"  # Slurm no longer holds the job, and it wrote no end
        rows.append(StepStatus(key, status, _detail(state), job, tuple(by_step.get(key, []))))
    return rows, list(graph.get("flags", []))


def _labels(cells: tuple[str, ...]) -> str:
    """'lamp (5 suites), no-motion (4 suites)': the labels of the cells a step's checkpoint serves."""
    counts = Counter(cell.split("/", 1)[0] for cell in cells)
    return ", ".join(f"{label} ({n} suite{'s' if n > 1 else ''})" for label, n in counts.items())


def print_steps(out: str | Path, console: Any) -> None:
    """The steps table and the blocked cells, printed by `lamp-bench status` and `lamp-bench sweep`."""
    from rich.table import Table

    rows, flags = steps_status(out)
    if not rows:
        return
    table = Table(title=f"sweep steps in {out}", title_justify="left")
    for column in ("step", "status", "job", "detail", "cells"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.key, row.status, row.job_id or "", row.detail[:90], _labels(row.blocks))
    console.print(table)
    for row in rows:
        if row.status in (FAILED, "died") and row.blocks:  # the reason once per step, then the cells it blocks
            console.print(f"blocked by {row.key} ({row.status}): {row.detail or 'no reason recorded'}", highlight=False)
            console.print(f"  cells: {', '.join(row.blocks)}", highlight=False)
    for flag in flags:
        console.print(f"note: {flag}", highlight=False)


__all__ = ["StepStatus", "print_steps", "steps_status", "STEP_FILE"]
