"""Scheduling overhead of the local and Slurm executors per episode, against the inline executor in
the same run. Target: <= 2% of the episode time at the default chunk size.

The same episodes run three ways, one job at a time (local: 1 worker; Slurm: array parallelism 1),
so the difference in wall time is what the executor adds: job submission and scheduling, a fresh
Python process with its imports, building the policy and the suite again, state polling. The inline
executor pays for one policy and suite build per job too, so that part cancels out.

Workload: the `noop` policy on LIBERO-Spatial. With `--cameras none` (default) an episode is physics
only, the cheapest episode the harness runs, so the overhead fraction is an upper bound for real
policies, whose episodes are slower. A second measurement with one-episode jobs gives the fixed cost
of one job, from which the fraction at any chunk size follows; benchmarks/results/scheduling_overhead.md
turns that into advice on the chunk size for a Slurm cluster.

    python benchmarks/scheduling_overhead.py               # needs .ci/slurm.sh start (root) for slurm
    python benchmarks/scheduling_overhead.py --executors inline,local --episodes 20
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from lamp_bench.harness.executors import SlurmOptions
from lamp_bench.harness.sweep import DEFAULT_CHUNK_SIZE, load_sweep, plan_sweep, run_sweep
from lamp_bench.results.store import EpisodeStore, record_key

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def sweep_file(folder: Path, episodes: int, cameras: str) -> Path:
    """`episodes` noop episodes on LIBERO-Spatial: 10 tasks x up to 50 initial states."""
    per_task = -(-episodes // 10) if episodes > 10 else 1
    tasks = list(range(min(10, episodes)))
    camera_list = "[]" if cameras == "none" else json.dumps(cameras.split(","))
    path = folder / "overhead.toml"
    path.write_text(f"""
[policies.noop]
kwargs = {{ cameras = {camera_list} }}
[suites.libero_spatial]
tasks = {tasks}
episodes_per_task = {per_task}
[tables.overhead]
policies = ["noop"]
suites = ["libero_spatial"]
""")
    return path


def timed_run(sweep_path: Path, out: Path, executor: str, chunk: int, episodes: int) -> dict:
    plan = plan_sweep(load_sweep(sweep_path), out, chunk_size=chunk)
    plan.jobs = trim(plan.jobs, episodes)
    slurm = SlurmOptions(gpus_per_node=0, time="120", array_parallelism=1, poll_s=1.0, grace_s=10.0)
    start = time.perf_counter()
    result = run_sweep(plan, executor, workers=1, slurm=slurm)
    wall = time.perf_counter() - start
    if result.failures:
        raise RuntimeError(f"{executor} run failed: {result.failures}")
    records = {record_key(r): r for r in EpisodeStore(out).records()}
    assert len(records) == episodes, f"{executor}: {len(records)} episodes recorded, expected {episodes}"
    return {"executor": executor, "chunk_size": chunk, "jobs": len(plan.jobs), "episodes": episodes,
            "wall_s": round(wall, 2), "active_s": round(sum(active_span(job, records) for job in plan.jobs), 2)}


def active_span(job, records: dict) -> float:
    """From the start of a job's first episode to the end of its last: the part of a job that is the
    same in every executor (episodes and the resets between them)."""
    mine = [records[(job.spec.run_label, e.suite, e.task_id, e.init_index, e.seed)] for e in job.spec.episodes]
    ends = [datetime.fromisoformat(r["finished_at"]).timestamp() for r in mine]
    starts = [end - r["wall_time_s"] for end, r in zip(ends, mine)]
    return max(ends) - min(starts)


def trim(jobs, episodes: int):
    """The first `episodes` episodes of the plan, keeping its chunking."""
    kept, left = [], episodes
    for job in jobs:
        if left <= 0:
            break
        job.spec.episodes = job.spec.episodes[:left]
        left -= len(job.spec.episodes)
        kept.append(job)
    return kept


def measure(sweep_path: Path, work: Path, executors: list[str], chunk: int, episodes: int, tag: str) -> dict:
    runs = {}
    for executor in executors:
        runs[executor] = timed_run(sweep_path, work / f"{tag}-{executor}", executor, chunk, episodes)
        print(f"  {tag} {executor}: {runs[executor]}", flush=True)
    return analyse({"chunk_size": chunk, "episodes": episodes, "runs": runs})


def analyse(measured: dict) -> dict:
    """Jobs run one at a time, so a run's wall time minus its jobs' active spans is the time spent
    outside episodes: submission, scheduling, process start-up and imports, builds, polling. The
    executor's overhead is how much more of that time it has than the inline executor. Leaving the
    episodes out keeps the noise of other work on the machine (which slows episodes) out of it."""
    runs, episodes = measured["runs"], measured["episodes"]
    inline = runs["inline"]
    episode_s = inline["wall_s"] / episodes  # per episode inline, everything included
    outside_inline = inline["wall_s"] - inline["active_s"]
    for run in runs.values():
        extra = (run["wall_s"] - run["active_s"]) - outside_inline
        run["overhead_per_job_s"] = round(extra / run["jobs"], 2)
        run["overhead_per_episode_s"] = round(extra / episodes, 3)
        run["overhead_fraction_of_episode"] = round(extra / episodes / episode_s, 4)
        run["wall_difference_fraction"] = round(run["wall_s"] / inline["wall_s"] - 1, 4)
    return {**measured, "inline_episode_s": round(episode_s, 3)}


def markdown(report: dict) -> str:
    """The measured figures and how to choose the chunk size from them (benchmarks/results/*.md)."""
    default, startup = report["default_chunk"], report["startup"]
    rows = "\n".join(
        f"| {e} | {r['jobs']} | {r['episodes']} | {r['wall_s']} | {r['active_s']} | "
        f"{r['overhead_per_job_s']} | {r['overhead_per_episode_s']} | {100 * r['overhead_fraction_of_episode']:.2f}% | "
        f"{100 * r['wall_difference_fraction']:+.1f}% |"
        for e, r in default["runs"].items())
    start_rows = "\n".join(f"| {e} | {r['overhead_per_job_s']} |" for e, r in startup["runs"].items() if e != "inline")
    job_s = startup["runs"].get("slurm", startup["runs"].get("local"))["overhead_per_job_s"]
    episode_s = default["inline_episode_s"]
    return f"""# Scheduling overhead per episode

Written by `benchmarks/scheduling_overhead.py` (figures: `scheduling_overhead.json`).
Target: {report["target"]}. **{"Met" if report["passed"] else "NOT met"}** at the default chunk size
of {report["default_chunk_size"]} episodes per job.

Workload: {report["workload"]}; {report["machine"]["cpus"]} CPU cores, load average
{", ".join(f"{x:.1f}" for x in report["load_average_after"])} at the end: other work shared the machine and
slowed episodes unevenly, which is why the overhead is taken from the time outside the jobs' episodes
("in episodes": first episode start to last episode end of every job) rather than from the plain
difference in wall time (last column, which mostly shows the varying load).
Slurm is the one-node cluster of `.ci/slurm.sh`; jobs run one at a time (array parallelism 1, one
local worker) so that the only difference to the inline executor is what the executor adds.

## At the default chunk size ({default["episodes"]} episodes, jobs of {default["chunk_size"]})

| executor | jobs | episodes | wall s | in episodes s | overhead per job s | per episode s | of an episode | wall vs inline |
|---|---|---|---|---|---|---|---|---|
{rows}

Inline time per episode: {episode_s} s, reset included (a physics-only `noop` episode, the cheapest
the harness runs; real policies take longer per episode, which lowers the fraction).

## Fixed cost of one job ({startup["episodes"]} one-episode jobs)

| executor | overhead per job s |
|---|---|
{start_rows}

A job pays this once: submission and scheduling, a new Python process and its imports, state
polling. Building the policy, the suite and its environments is paid by every job in every executor
(the inline executor too), so it is not part of this figure, but on a GPU cluster loading a 7B
checkpoint (30-120 s from a network filesystem) and importing torch are, since inline pays them once.

## Choosing `--chunk-size` on a Slurm cluster

With S the start-up cost of a job (the figure above plus checkpoint loading, plus queue wait if you
count it) and E the time per episode of a job (episode wall time / envs per worker, since a worker
steps that many episodes together), the overhead fraction is about S / (chunk x E):

* For <= 2%, chunk >= 50 x S / E. Here: S = {job_s} s, E = {episode_s} s gives chunk >= {50 * job_s / episode_s:.0f}.
  An illustration, not measured here: a 7B LaMP on one GPU with S ~ 90 s (imports and checkpoint)
  and E ~ 10 s (8 environments per worker) needs chunk >= 450; the default of
  {report["default_chunk_size"]} would cost ~{100 * 90 / (report["default_chunk_size"] * 10):.0f}%, which is why sweeps/paper.toml sets 500.
* Preemption and failures do not favour small chunks: every episode is written to the store when it
  ends, so a job killed without warning (node failure, OOM, preemption without a signal) loses only
  the episodes under way (at most envs-per-worker of them) plus one start-up S when it is resubmitted,
  whatever the chunk size. On the time-limit/preemption signal (USR2, `signal_delay_s` before the
  end) the job finishes the episodes under way and requeues, losing nothing but S.
* What bounds the chunk from above:
  - the partition's time limit: give `--time` >= 1.2 x chunk x E + S, else the job is cut and
    requeued (costs S each time, at most 3 times by default);
  - parallelism: a sweep of N episodes makes N / chunk jobs; with fewer jobs than GPUs you can get,
    GPUs stay idle. Keep N / chunk >= 2-3 x the GPUs you expect, so short and long tasks even out;
  - the tail: the sweep ends about chunk x E after the last job starts;
  - preemptible partitions: a job of length T is preempted about T / (mean time between preemptions)
    times, each costing S: long jobs on such partitions repeat their start-up more often.
* Rule of thumb: chunk = max(50 x S / E, 1), then lower it until N / chunk covers your GPUs two or
  three times over and chunk x E fits the time limit.
"""


def slurm_up() -> bool:
    return shutil.which("sinfo") is not None and subprocess.run(
        ["sinfo", "-h"], capture_output=True).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executors", default="inline,local,slurm")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--episodes", type=int, default=None, help="default: one job of the chunk size")
    parser.add_argument("--startup-jobs", type=int, default=4, help="one-episode jobs to measure the job cost")
    parser.add_argument("--cameras", default="none", help="noop's cameras: none or third_person[,wrist]")
    parser.add_argument("--out", type=Path, default=RESULTS / "scheduling_overhead.json")
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from an existing --out")
    args = parser.parse_args()
    if args.render:
        args.out.with_suffix(".md").write_text(markdown(json.loads(args.out.read_text())))
        return
    executors = [e for e in args.executors.split(",") if e]
    if "inline" not in executors:
        executors.insert(0, "inline")
    if "slurm" in executors and not slurm_up():
        sys.exit("slurm is not reachable: start the local cluster with `.ci/slurm.sh start` or drop it from --executors")
    os.environ.setdefault("LAMP_BENCH_LIBERO_ASSETS", str(REPO.parent / "shared" / "assets" / "libero"))
    episodes = args.episodes or args.chunk_size

    with tempfile.TemporaryDirectory(prefix="lamp-overhead-", dir=os.environ.get("LAMP_BENCH_SCRATCH")) as tmp:
        work = Path(tmp)
        sweep_path = sweep_file(work, max(episodes, args.startup_jobs), args.cameras)
        # Imports and first-use costs of this process are paid once per sweep; keep them out of inline.
        timed_run(sweep_path, work / "warm-up", "inline", 1, 1)
        print(f"job start-up: {args.startup_jobs} one-episode jobs", flush=True)
        startup = measure(sweep_path, work, executors, 1, args.startup_jobs, "startup")
        print(f"default chunk: {episodes} episodes in jobs of {args.chunk_size}", flush=True)
        default = measure(sweep_path, work, executors, args.chunk_size, episodes, "chunk")

    report = {
        "benchmark": "scheduling_overhead",
        "target": "overhead per episode <= 2% of the episode time at the default chunk size",
        "workload": f"noop policy (cameras: {args.cameras}) on libero_spatial, one job at a time",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "host": platform.node()},
        "default_chunk_size": args.chunk_size,
        "startup": startup,
        "default_chunk": default,
        "load_average_after": os.getloadavg(),
        "passed": all(r["overhead_fraction_of_episode"] <= 0.02 for r in default["runs"].values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(json.dumps({e: r["overhead_fraction_of_episode"] for e, r in default["runs"].items()}), "->", args.out)


if __name__ == "__main__":
    main()
