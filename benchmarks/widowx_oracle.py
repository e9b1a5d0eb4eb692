"""Success rate of the privileged scripted `oracle` on SimplerEnv-WidowX (real ManiSkill3), through the episode
runner, SimplerEnv's protocol (24 object configurations per task, success at the final step).
Target: >= 60% on carrot, spoon and cube over 24 episodes each. Also records partial success (grasp),
consecutive grasp and time per step. Writes benchmarks/results/widowx_oracle.json.

    python benchmarks/widowx_oracle.py [--tasks 0,1,2,3] [--episodes 24] [--assets DIR]

The asset folder comes from --assets or $LAMP_BENCH_MANISKILL_ASSETS.
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

TARGET = {"PutSpoonOnTableClothInScene-v1": 0.6, "PutCarrotOnPlateInScene-v1": 0.6,
          "StackGreenCubeOnYellowCubeBakedTexInScene-v1": 0.6}
OUT = Path(__file__).parent / "results" / "widowx_oracle.json"


def rate(records: list[dict], key: str) -> float:
    values = [r["success"] if key == "success" else r["info"].get(key, False) for r in records]
    return round(sum(map(bool, values)) / max(len(values), 1), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="0,1,2,3")
    parser.add_argument("--episodes", type=int, default=24, help="object configurations per task")
    parser.add_argument("--assets", default=None)
    args = parser.parse_args()
    load_builtin_entries()
    suite = SUITES.build("simpler_widowx", **({"assets": args.assets} if args.assets else {}))
    policy = POLICIES.build("oracle")
    task_ids = [int(t) for t in args.tasks.split(",")]
    started = time.perf_counter()
    records = run_episodes(policy, suite, suite.episodes(task_ids, args.episodes), lambda record: None)
    wall = time.perf_counter() - started
    per_task: dict[int, list] = defaultdict(list)
    for r in records:
        per_task[r["task_id"]].append(r)
    tasks = {}
    for t, rs in sorted(per_task.items()):
        name = rs[0]["task_name"]
        tasks[name] = {
            "episodes": len(rs),
            "success_rate": rate(rs, "success"),
            "partial_success_rate": rate(rs, "partial_success"),
            "consecutive_grasp_rate": rate(rs, "consecutive_grasp"),
            "success_once_rate": rate(rs, "success_once"),
            "target": TARGET.get(name),
            "meets_target": None if name not in TARGET else rate(rs, "success") >= TARGET[name],
            "failed_init_indices": [r["init_index"] for r in rs if not r["success"]],
            "failures": dict(Counter(r["failure_reason"] for r in rs if not r["success"])),
        }
        row = tasks[name]
        print(f"{name}: success {row['success_rate']:.0%} (target {row['target']}), partial "
              f"{row['partial_success_rate']:.0%}, failed {row['failed_init_indices']}", flush=True)
    steps = sum(r["steps"] for r in records)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "measured_at": datetime.now(timezone.utc).isoformat(),
        "episodes_per_task": args.episodes,
        "tasks": tasks,
        "wall_time_s": round(wall, 1),
        "steps": steps,
        "seconds_per_step_incl_resets": round(wall / max(steps, 1), 4),
        "note": "oracle renders no camera (obs mode 'none'); every reset rebuilds the physics scene",
        "suite_provenance": suite.provenance(),
        "provenance": base_provenance(),
    }, indent=2, default=str))
    print(f"wrote {OUT} ({wall:.0f} s, {steps} steps)")


if __name__ == "__main__":
    main()
