"""`lamp-bench status`: per cell of a sweep, episodes done / running / failed / pending."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from lamp_bench.harness.slurm import slurm_states
from lamp_bench.harness.sweep.ledger import Ledger, entry_episodes, jobs_dir, read_json, read_plan
from lamp_bench.results.record import ENV_ERROR, POLICY_ERROR, EpisodeKey, outcome_of, record_key
from lamp_bench.results.store import EpisodeStore


@dataclass
class CellStatus:
    label: str
    suite: str
    tables: tuple[str, ...]
    total: int
    done: int = 0  # recorded with a result: success, failure or policy error
    running: int = 0  # in a job that is running now
    failed: int = 0  # an unresolved environment error, or in a job that failed for good
    pending: int = 0  # queued or not submitted yet
    successes: int = 0
    policy_errors: int = 0  # of `done`: counted as failures
    env_errors: int = 0  # of `failed`: retried when the sweep runs again
    errors: list[str] = field(default_factory=list)  # why jobs or episodes failed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_status(out: str | Path) -> list[CellStatus]:
    """Per cell of the sweep last planned in `out`: episodes done / running / failed / pending,
    from the episode store, the jobs' own state files and (for Slurm jobs) squeue."""
    out = Path(out)
    plan = read_plan(out)
    store = EpisodeStore(out)
    records = {record_key(r): r for r in store.records()}
    submissions = Ledger(out).entries
    workers = [read_json(p) for p in sorted((jobs_dir(out) / "workers").glob("*.json"))]
    slurm_ids = [s["job_id"] for s in submissions if s["executor"] == "slurm"]
    slurm_ids += [w["slurm_job_id"] for w in workers if w and w.get("slurm_job_id")]
    queue = slurm_states(slurm_ids) if slurm_ids else {}
    host = socket.gethostname()

    def keys(entry: Mapping[str, Any]) -> list[EpisodeKey]:
        return [EpisodeKey.of(entry["label"], e) for e in entry_episodes(entry)]

    running: set[EpisodeKey] = set()
    for worker in workers:
        if not worker or worker.get("state") != "running":
            continue
        if worker.get("slurm_job_id") and queue is not None:
            alive = queue.get(worker["slurm_job_id"]) == "RUNNING"
        elif worker.get("host") == host:
            alive = _pid_alive(int(worker["pid"]))
        else:
            alive = True  # another machine, no scheduler to ask: trust the job's own word
        if alive:
            running.update(keys(worker))

    latest: dict[str, dict[str, Any]] = {}
    for entry in submissions:
        latest[entry["key"]] = entry
    failed: dict[EpisodeKey, str] = {}
    for entry in latest.values():
        if entry.get("outcome") == "failed":
            for key in keys(entry):
                failed[key] = entry.get("error") or "job failed"
        elif entry["executor"] == "slurm" and queue and queue.get(entry["job_id"]) == "RUNNING":
            running.update(keys(entry))

    result = []
    for cell, episodes in zip(plan.cells, plan.cell_episodes()):
        status = CellStatus(cell.label, cell.suite, cell.tables, total=len(episodes))
        reasons = set()
        for e in episodes:
            key = EpisodeKey.of(cell.label, e)
            record = records.get(key)
            outcome = None if record is None else outcome_of(record)
            if outcome == ENV_ERROR:
                status.failed += 1
                status.env_errors += 1
                reasons.add(f"environment error (retried when the sweep runs again): {record.get('failure_reason')}")
            elif record is not None:
                status.done += 1
                status.successes += bool(record["success"])
                status.policy_errors += outcome == POLICY_ERROR
            elif key in running:
                status.running += 1
            elif key in failed:
                status.failed += 1
                reasons.add(failed[key])
            else:
                status.pending += 1
        status.errors = sorted(reasons)
        result.append(status)
    return result
