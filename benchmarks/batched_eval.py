"""Batched multi-environment evaluation, measured side by side in one run; writes
benchmarks/results/batched_eval.json.

  1. Episodes per hour of the oracle on real LIBERO-Spatial, rendering the third-person camera
     (as an image policy would need), for K = 1, 2, 4 environments per worker
     (target on a 2-core machine: K = 2 >= 1.7x K = 1).
     Beside it, the machine's ceiling without the harness: environment steps per second of one
     LIBERO process stepping alone (Mesa's software rasteriser then renders on every core) and of
     K processes stepping at once with one rendering thread each (what the env workers get).
  2. Policy calls per second of the `small` LaMP preset (random weights of the real size) at
     batch 1 vs batch 8, i.e. environment-steps per second of inference.

    python benchmarks/batched_eval.py [--episodes 16] [--ks 1,2,4] [--small-repeats 5]

Choosing K: on CPU machines simulation and rendering dominate, so K ~ cores per worker (each
environment process keeps one core busy; more only adds memory). On a GPU node inference dominates
(~160 of 170 s per 500 LIBERO steps for OpenVLA), so raise K until policy calls per second stop
growing with the batch or the node's CPU cores are all busy stepping environments; the figures of
part 2 on the GPU give the first bound, the node's core count the second.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from lamp_bench.harness.registry import POLICIES, SUITES
from lamp_bench.harness.runner import RunOptions, run_episodes
from lamp_bench.harness.suite import SuiteSpec

OUT = Path(__file__).resolve().parent / "results" / "batched_eval.json"
TARGET_K2_SPEEDUP = 1.7


def episodes_per_hour(k: int, n_episodes: int) -> dict:
    suite = SUITES.build("libero_spatial")
    policy = POLICIES.build("oracle")
    policy.needs = dataclasses.replace(policy.needs, cameras=("third_person",))  # render as an image policy would
    per_task = max(1, n_episodes // 4)
    episodes = suite.episodes([0, 1, 2, 3], per_task, seed=0)[:n_episodes]
    start = time.perf_counter()
    records = run_episodes(policy, SuiteSpec("libero_spatial"), episodes, lambda r: None,
                           options=RunOptions(envs_per_worker=k), built=suite)
    wall = time.perf_counter() - start
    steps = sum(r["steps"] for r in records)
    return {"k": k, "episodes": len(records), "successes": sum(r["success"] for r in records),
            "policy_steps": steps, "wall_s": round(wall, 2),
            "episodes_per_hour": round(len(records) / wall * 3600, 1),
            "steps_per_s": round(steps / wall, 2)}


def _raw_steps(threads: str | None, steps: int, ready, go, result) -> None:
    """Child process: build one LIBERO environment and time `steps` plain env.step calls."""
    if threads is not None:
        os.environ["LP_NUM_THREADS"] = threads
    from lamp_bench.harness.policy import PolicyNeeds

    suite = SUITES.build("libero_spatial")
    env = suite.make_env(PolicyNeeds(cameras=("third_person",)))
    env.reset(suite.episodes([0], 1, seed=0)[0])
    action = np.zeros(7)
    action[6] = -1.0
    ready.put(True)
    go.wait()  # all processes step at the same time
    start = time.perf_counter()
    for _ in range(steps):
        env.step(action)
    result.put(time.perf_counter() - start)
    env.close()


def raw_ceiling(k: int, steps: int = 60) -> dict:
    """Env steps per second of k LIBERO processes stepping at once, no harness (k = 1: default threads)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    ready, go, result = ctx.Queue(), ctx.Event(), ctx.Queue()
    processes = [ctx.Process(target=_raw_steps, args=(None if k == 1 else "1", steps, ready, go, result))
                 for _ in range(k)]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get()
    go.set()
    walls = [result.get() for _ in processes]
    for process in processes:
        process.join()
    return {"k": k, "steps_per_s": round(k * steps / max(walls), 2)}


def policy_calls_per_second(batch: int, repeats: int) -> dict:
    import torch

    from lamp_bench.harness.policy import Task
    from lamp_bench.models.lamp.profiling import fake_observations

    policy = POLICIES.build("lamp", preset="small", random_depth=True)
    observations = fake_observations(policy, batch)
    tasks = [Task("bench", 0, "bench", "put the bowl on the plate")] * batch
    with torch.inference_mode():
        policy.reset(tasks, list(range(batch)), list(range(batch)))
        policy.act(observations, list(range(batch)))  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            policy.act(observations, list(range(batch)))
            times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {"batch": batch, "median_call_s": round(median, 4), "calls_per_s": round(1 / median, 3),
            "env_steps_per_s": round(batch / median, 3), "torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=16, help="per K; enough to amortise starting the env processes")
    parser.add_argument("--ks", default="1,2,4")
    parser.add_argument("--small-repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    simulation = [episodes_per_hour(int(k), args.episodes) for k in args.ks.split(",")]
    for row in simulation:
        print(f"K={row['k']}: {row['episodes_per_hour']} episodes/h ({row['wall_s']} s for {row['episodes']})")
    base = next(r for r in simulation if r["k"] == 1)["episodes_per_hour"]
    for row in simulation:
        row["speedup_vs_k1"] = round(row["episodes_per_hour"] / base, 3)
    ceiling = [raw_ceiling(int(k)) for k in args.ks.split(",")]
    for row in ceiling:
        row["speedup_vs_k1"] = round(row["steps_per_s"] / ceiling[0]["steps_per_s"], 3)
        print(f"raw, {row['k']} processes: {row['steps_per_s']} env steps/s ({row['speedup_vs_k1']}x)")
    inference = [policy_calls_per_second(b, args.small_repeats) for b in (1, 8)]
    for row in inference:
        print(f"small preset, batch {row['batch']}: {row['calls_per_s']} calls/s = {row['env_steps_per_s']} env-steps/s")
    k2 = next((r for r in simulation if r["k"] == 2), None)
    report = {
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "processor": platform.machine(), "load_average_before": load_before},
        "simulation_oracle_rendering": simulation,
        "raw_env_processes_no_harness": ceiling,
        "inference_small_preset": inference,
        "targets": {"k2_over_k1": {"value": k2 and k2["speedup_vs_k1"], "target": f">= {TARGET_K2_SPEEDUP}",
                                   "met": bool(k2 and k2["speedup_vs_k1"] >= TARGET_K2_SPEEDUP)}},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"K=2 vs K=1: {report['targets']['k2_over_k1']['value']} (target >= {TARGET_K2_SPEEDUP})")


if __name__ == "__main__":
    main()
