"""Success rate of the privileged scripted `oracle` on real LIBERO suites, through the episode runner.
Target: >= 80% on libero_spatial over 10 tasks x 5 initial states. Writes
benchmarks/results/oracle_success.json (per suite, per task, with failure reasons).

    python benchmarks/oracle_success.py [--suites libero_spatial,libero_object,libero_goal] [--inits 5]

The asset folder comes from --assets or $LAMP_BENCH_LIBERO_ASSETS.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

from lamp_bench.harness.provenance import base_provenance
from lamp_bench.harness.registry import POLICIES, SUITES, load_builtin_entries
from lamp_bench.harness.runner import run_episodes

TARGET = {"libero_spatial": 0.80}
OUT = Path(__file__).parent / "results" / "oracle_success.json"


def measure(suite_name: str, inits: int, assets: str | None) -> dict:
    suite = SUITES.build(suite_name, **({"assets": assets} if assets else {}))
    policy = POLICIES.build("oracle")
    started = time.perf_counter()
    records = run_episodes(policy, suite, suite.episodes(episodes_per_task=inits), lambda record: None)
    per_task: dict[int, list] = defaultdict(list)
    for r in records:
        per_task[r["task_id"]].append(r)
    successes = sum(r["success"] for r in records)
    return {
        "episodes": len(records),
        "successes": successes,
        "success_rate": round(successes / len(records), 4),
        "target": TARGET.get(suite_name),
        "mean_steps_of_successes": round(sum(r["steps"] for r in records if r["success"]) / max(successes, 1), 1),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "tasks": {
            t: {"name": rs[0]["task_name"], "successes": sum(r["success"] for r in rs), "episodes": len(rs),
                "failures": dict(Counter(r["failure_reason"] for r in rs if not r["success"]))}
            for t, rs in sorted(per_task.items())
        },
        "provenance": suite.provenance(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suites", default="libero_spatial,libero_object,libero_goal")
    parser.add_argument("--inits", type=int, default=5, help="initial states (episodes) per task")
    parser.add_argument("--assets", default=None)
    args = parser.parse_args()
    load_builtin_entries()
    results = {}
    for name in args.suites.split(","):
        results[name] = measure(name, args.inits, args.assets)
        r = results[name]
        print(f"{name}: {r['successes']}/{r['episodes']} = {r['success_rate']:.0%} "
              f"(target {r['target']}) in {r['wall_time_s']} s", flush=True)
        for t, row in r["tasks"].items():
            print(f"  task {t}: {row['successes']}/{row['episodes']} {row['name']} {row['failures'] or ''}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "measured_at": datetime.now(timezone.utc).isoformat(),
        "inits_per_task": args.inits,
        "suites": results,
        "provenance": base_provenance(),
    }, indent=2, default=str))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
