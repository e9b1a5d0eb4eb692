"""Fault injection: SIGKILL random workers of a running sweep at random moments, resume, and count
episodes lost and duplicated. Both must be 0, and every episode must end as it does without faults.

Each repetition runs sweeps/smoke.toml (oracle and noop on two LIBERO-Spatial tasks x 2 episodes,
jobs of 2 episodes) with the local or the Slurm executor, alternating. While it runs, 1-3 kills land
at uniformly random moments, each on a random job process that is running an episode, found through
the state files jobs write (<out>/jobs/workers/). The Slurm executor resubmits a killed job's
unfinished episodes by itself; the local executor reports the failure and the sweep is run again.

    python benchmarks/fault_injection.py                   # 20 repetitions; Slurm needs .ci/slurm.sh start
    python benchmarks/fault_injection.py --executors local --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from lamp_bench.harness.executors import SlurmOptions
from lamp_bench.harness.sweep import jobs_dir, load_sweep, plan_sweep, run_sweep
from lamp_bench.results.store import EpisodeStore, record_key

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
SMOKE = REPO / "sweeps" / "smoke.toml"
SLURM = SlurmOptions(gpus_per_node=0, time="30", poll_s=1.0, grace_s=5.0, max_retries=3)


def job_processes(out: Path) -> list[int]:
    """Pids of job processes that say they are running, checked to be submitit jobs (no pid reuse)."""
    pids = []
    for path in (jobs_dir(out) / "workers").glob("*.json"):
        try:
            state = json.loads(path.read_text())
        except (json.JSONDecodeError, FileNotFoundError):
            continue
        if state["state"] != "running":
            continue
        try:
            cmdline = Path(f"/proc/{state['pid']}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if b"submitit" in cmdline:
            pids.append(int(state["pid"]))
    return pids


def outcomes(out: Path) -> dict[tuple, tuple]:
    return {record_key(r): (r["status"], r["success"], r["steps"]) for r in EpisodeStore(out).records()}


def repetition(index: int, executor: str, work: Path, rng: random.Random, expected_s: float) -> dict:
    out = work / f"rep{index:02d}-{executor}"
    plan = plan_sweep(load_sweep(SMOKE), out)
    expected = {(j.spec.run_label, e.suite, e.task_id, e.init_index, e.seed) for j in plan.jobs for e in j.spec.episodes}
    kill_at = sorted(rng.uniform(0, expected_s) for _ in range(rng.randint(1, 3)))
    first: dict = {}
    driver = threading.Thread(target=lambda: first.update(r=run_sweep(plan, executor, workers=2, slurm=SLURM)))
    start = time.monotonic()
    driver.start()
    kills, missed = [], 0
    for moment in kill_at:
        while time.monotonic() - start < moment and driver.is_alive():
            time.sleep(0.05)
        victims = job_processes(out)
        if not victims or not driver.is_alive():
            missed += 1
            continue
        pid = rng.choice(victims)
        try:
            os.kill(pid, signal.SIGKILL)
            kills.append(round(time.monotonic() - start, 2))
        except ProcessLookupError:
            missed += 1
    driver.join()
    resumes = 0
    while outcomes(out).keys() != expected and resumes < 5:  # resume: run the same sweep again
        resumes += 1
        run_sweep(plan, executor, workers=2, slurm=SLURM)
    raw = Counter(record_key(r) for r in EpisodeStore(out).iter_raw())
    return {
        "repetition": index, "executor": executor, "kills": kills, "missed_kills": missed,
        "first_run_failures": len(first["r"].failures), "resumes": resumes,
        "episodes_expected": len(expected), "episodes_recorded": len(raw),
        "lost": len(expected - raw.keys()), "duplicated": sum(n - 1 for n in raw.values()),
        "unexpected": len(raw.keys() - expected), "wall_s": round(time.monotonic() - start, 1),
        "out": str(out),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--executors", default="local,slurm", help="alternated over the repetitions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "fault_injection.json")
    args = parser.parse_args()
    os.environ.setdefault("LAMP_BENCH_LIBERO_ASSETS", str(REPO.parent / "shared" / "assets" / "libero"))
    executors = args.executors.split(",")
    if "slurm" in executors and subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        raise SystemExit("slurm is not reachable: `.ci/slurm.sh start`, or --executors local")
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lamp-faults-") as tmp:
        work = Path(tmp)
        reference_dir = work / "reference"
        started = time.monotonic()
        run_sweep(plan_sweep(load_sweep(SMOKE), reference_dir), "inline")
        reference = outcomes(reference_dir)
        expected_s = {"local": (time.monotonic() - started) / 2, "slurm": (time.monotonic() - started) / 2 + 10}
        for index in range(args.repeats):
            executor = executors[index % len(executors)]
            row = repetition(index, executor, work, rng, expected_s[executor])
            got = outcomes(Path(row.pop("out")))
            row["outcome_mismatches"] = sum(got.get(k) != v for k, v in reference.items())
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {
        "repetitions": len(rows),
        "by_executor": dict(Counter(r["executor"] for r in rows)),
        "kills_landed": sum(len(r["kills"]) for r in rows),
        "kills_missed": sum(r["missed_kills"] for r in rows),
        "resumes": sum(r["resumes"] for r in rows),
        "episodes_expected": sum(r["episodes_expected"] for r in rows),
        "lost": sum(r["lost"] for r in rows),
        "duplicated": sum(r["duplicated"] for r in rows),
        "unexpected": sum(r["unexpected"] for r in rows),
        "outcome_mismatches": sum(r["outcome_mismatches"] for r in rows),
    }
    summary["passed"] = summary["lost"] == summary["duplicated"] == summary["outcome_mismatches"] == 0
    report = {"benchmark": "fault_injection", "sweep": str(SMOKE.relative_to(REPO)), "seed": args.seed,
              "summary": summary, "repetitions": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary), "->", args.out)


if __name__ == "__main__":
    main()
