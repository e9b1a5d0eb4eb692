"""The embedded default, measured end to end on this machine: collect oracle demonstrations of a few
LIBERO-Spatial tasks, train the `tiny` LaMP on them (stage 1 + stage 2), then roll out the trained
checkpoint and the same architecture untrained on the training tasks.

Writes benchmarks/results/train_tiny.json: wall time, throughput and peak memory of each phase, the
training curve's end points, and per-task success of trained vs untrained. Each phase runs in its own
process, so its peak resident memory is measured on its own.

    python benchmarks/train_tiny.py                 # the defaults below, from scratch
    python benchmarks/train_tiny.py --demos 10 --stage2-steps 500   # a quicker look
    python benchmarks/train_tiny.py --no-proprio --work benchmarks/results/train_tiny_no_proprio_work \
        --results benchmarks/results/train_tiny_no_proprio.json      # without the proprioception token

Demonstrations come from initial states >= --eval-inits, so the rollouts (initial states 0 .. eval-inits-1,
LIBERO's evaluation protocol) start from layouts the policy never saw in training.
"""
from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "train_tiny.json"


LOAD: dict[str, list[float]] = {}  # 1-minute load average at each phase's start and end (shared machine)


def _phase(target: Callable[..., Any], *args: Any) -> tuple[Any, float, float]:
    """Run target(*args) in a fresh spawned process -> (result, wall seconds, peak RSS in GB)."""
    LOAD.setdefault(target.__name__, []).append(os.getloadavg()[0])
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(queue, target, args))
    started = time.perf_counter()
    process.start()
    status, value, peak_kb = queue.get()
    process.join()
    wall = time.perf_counter() - started
    LOAD[target.__name__].append(os.getloadavg()[0])
    if status == "error":
        raise RuntimeError(value)
    return value, wall, peak_kb / 1024**2


def _child(queue, target, args) -> None:
    try:
        value = target(*args)
        queue.put(("ok", value, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                   + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
    except BaseException as error:  # report, do not hang the parent
        import traceback

        queue.put(("error", f"{type(error).__name__}: {error}\n{traceback.format_exc()}", 0))


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """One collection process per shard of the initial states (each writes its own files, so they never
    share one); every shard collects its part of each task's demonstrations."""
    shards = min(args.collect_workers, args.demos)
    with mp.get_context("spawn").Pool(shards) as pool:
        parts = pool.starmap(_collect_shard, [(args, shard, shards) for shard in range(shards)])
    tasks = {}
    for entry in (t for part in parts for t in part["tasks"]):
        total = tasks.setdefault(entry["task_id"], {"task_id": entry["task_id"], "demos": 0, "steps": 0})
        total["demos"] += entry["demos"]
        total["steps"] += entry["steps"]
    return {"tasks": sorted(tasks.values(), key=lambda t: t["task_id"]), "demos": sum(p["demos"] for p in parts),
            "steps": sum(p["steps"] for p in parts), "action_noise": args.noise}


def _collect_shard(args: argparse.Namespace, shard: int, shards: int) -> dict[str, Any]:
    from lamp_bench.harness.demos import collect_demos

    demos = args.demos // shards + (shard < args.demos % shards)
    return collect_demos("libero_spatial", args.tasks, demos, args.work / "demos" / f"shard{shard}",
                         assets=args.assets, seed=args.seed, progress=False, cameras=("third_person",),
                         image_size=64, action_noise=args.noise,
                         init_states=list(range(args.eval_inits, 50))[shard::shards])


def train(args: argparse.Namespace) -> dict[str, Any]:
    from lamp_bench.models.training.config import build_train_config
    from lamp_bench.models.training.loop import train as run_training

    config = build_train_config(preset="tiny", data=[str(args.work / "demos")], out=str(args.work / "ckpt"),
                                policy="lamp", stage="both", stage1_steps=args.stage1_steps,
                                stage2_steps=args.stage2_steps, batch_size=args.batch_size, seed=args.seed,
                                augment_shift=args.augment_shift, proprio=args.proprio, progress=True)
    run_training(config)
    with open(args.work / "ckpt" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return {"config": config.to_dict(), "metrics": rows}


def evaluate(args: argparse.Namespace, label: str, policy_kwargs: dict[str, Any]) -> dict[str, Any]:
    from lamp_bench.harness.executors import JobSpec, run_inline
    from lamp_bench.harness.registry import SUITES, load_builtin_entries
    from lamp_bench.results.store import EpisodeStore

    load_builtin_entries()
    suite = SUITES.build("libero_spatial", assets=args.assets)
    episodes = suite.episodes(args.tasks, args.eval_inits, seed=args.seed)
    out = args.work / "rollouts"
    run_inline([JobSpec(policy="lamp", suite="libero_spatial", episodes=episodes, results_dir=str(out), label=label,
                        policy_kwargs=policy_kwargs, suite_kwargs={"assets": str(args.assets)})])
    records = [r for r in EpisodeStore(out).records() if r["label"] == label]
    per_task = {}
    for task in args.tasks:
        mine = [r for r in records if r["task_id"] == task]
        per_task[str(task)] = {"episodes": len(mine), "successes": sum(r["success"] for r in mine),
                               "success_rate": sum(r["success"] for r in mine) / max(1, len(mine)),
                               "errors": sum(r["status"] == "error" for r in mine)}
    return per_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=lambda s: [int(t) for t in s.split(",")], default=[0])
    parser.add_argument("--demos", type=int, default=30, help="successful demonstrations per task")
    parser.add_argument("--noise", type=float, default=0.1, help="DART action noise (std) while collecting")
    parser.add_argument("--collect-workers", type=int, default=2, help="simulator processes collecting at once (each takes a share of the initial states)")
    parser.add_argument("--stage1-steps", type=int, default=150)
    parser.add_argument("--stage2-steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--augment-shift", type=int, default=4,
                        help="random image shift in pixels while training (0: off); a few demos overfit without it")
    parser.add_argument("--no-proprio", dest="proprio", action="store_false",
                        help="train without the tiny preset's proprioception token (the untrained baseline keeps it)")
    parser.add_argument("--eval-inits", type=int, default=10, help="initial states 0..N-1 are evaluated, not trained on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=ROOT / "results" / "train_tiny_work")
    parser.add_argument("--assets", type=Path, default=os.environ.get("LAMP_BENCH_LIBERO_ASSETS")
                        or ROOT.parents[1] / "shared" / "assets" / "libero")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON file written")
    args = parser.parse_args()
    if args.work.exists():  # timings are only meaningful from scratch
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)

    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "settings": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    demos, collect_s, collect_gb = _phase(collect, args)
    report["demos"] = {"summary": demos, "wall_s": round(collect_s, 1), "peak_rss_gb": round(collect_gb, 2)}
    trained, train_s, train_gb = _phase(train, args)
    rows = trained["metrics"]
    stage2 = [r for r in rows if r["stage"] == "2"]
    samples = (args.stage1_steps + args.stage2_steps) * args.batch_size
    report["training"] = {
        "wall_s": round(train_s, 1), "peak_rss_gb": round(train_gb, 2),
        "samples_per_s": round(samples / train_s, 1),
        "first": stage2[0] if stage2 else None, "last": stage2[-1] if stage2 else None,
        "stage1_last": next((r for r in reversed(rows) if r["stage"] == "1"), None),
    }
    report["demo_plus_training_minutes"] = round((collect_s + train_s) / 60, 1)
    if not args.skip_eval:
        report["success"] = {}
        for label, kwargs in (("trained", {"checkpoint": str(args.work / "ckpt")}), ("untrained", {"preset": "tiny"})):
            per_task, wall, _ = _phase(evaluate, args, label, kwargs)
            report["success"][label] = {"per_task": per_task, "wall_s": round(wall, 1)}
    report["load_average_1min"] = LOAD  # > cpus means other processes competed for the cores
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in report if k not in ("settings",)}, indent=1))


if __name__ == "__main__":
    main()
