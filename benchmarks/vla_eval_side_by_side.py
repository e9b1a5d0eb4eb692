"""The same work through vla-eval 0.8.0 and through lamp-bench: a no-op policy ("hold still, gripper open") on
the same LIBERO-Spatial tasks and episodes (init states 0..E-1, 220 policy steps after 10 settle steps), in
one run, with one process each and with two processes each.

  vla-eval   `vla-eval run --no-docker` of its own LIBERO benchmark (vla_eval.benchmarks.libero) in
             .venv-vla-eval, against a model server built on vla-eval's PredictModelServer (one server per
             simulator process); two processes = two shards (--shard-id/--num-shards) of one eval id.
  lamp-bench `lamp-bench run --policy noop` (one 224 px third-person camera, rendered 256 px); two
             processes = `--envs-per-worker 2`; the machine's two-process ceiling = two independent
             lamp-bench runs on half the tasks each, at the same time.

Reported: episodes per hour and CPU seconds per policy step (all processes of a configuration, the model
servers included), the ratios lamp-bench / vla-eval, and --envs-per-worker 2 as a share of the ceiling.
.venv-vla-eval needs LIBERO's stack beside vla-eval (libero 0.1.1 --no-deps, robosuite 1.4.0, mujoco 3.9,
bddl, torch CPU); the script checks and says what is missing.

Full run (quiet machine, ~25 min):  python benchmarks/vla_eval_side_by_side.py --tasks 4 --episodes 2
Smallest:                           python benchmarks/vla_eval_side_by_side.py --tasks 2 --episodes 1
lamp-bench's side alone (envs-per-worker 2 vs the two-process ceiling): add --lamp-bench-only
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PEER = REPO / ".venv-vla-eval"
RESULTS = Path(__file__).parent / "results" / "vla_eval_side_by_side.json"
STEPS = 220  # LIBERO-Spatial's protocol length (both harnesses' default)
LAMP_BENCH = [str(Path(sys.executable).with_name("lamp-bench"))]

NOOP_SERVER = """
import sys
import numpy as np
from vla_eval.model_servers.predict import PredictModelServer
from vla_eval.model_servers.serve import serve

class Noop(PredictModelServer):
    def predict(self, obs, ctx):
        action = np.zeros(7, np.float32)
        action[-1] = -1.0  # gripper open
        return {"actions": action}
    def get_action_spec(self):
        return {}
    def get_observation_spec(self):
        return {}

serve(Noop(max_batch_size=1), host="127.0.0.1", port=int(sys.argv[1]))
"""


class PeerMissing(Exception):
    """The vla-eval environment cannot run LIBERO."""


def check_peer() -> None:
    python = PEER / "bin" / "python"
    if not python.is_file():
        raise PeerMissing(f"{PEER} does not exist: build it with .ci/setup_peers")
    probe = subprocess.run([str(python), "-c", "import vla_eval, libero.libero, robosuite, mujoco, bddl"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        missing = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "import failed"
        raise PeerMissing(f"{PEER} has vla-eval but not LIBERO's stack ({missing}); install libero==0.1.1 "
                          "--no-deps, robosuite==1.4.0, mujoco 3.9, bddl, torch (CPU) into it")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def peer_environment(work: Path) -> dict[str, str]:
    """LIBERO's config for the peer's own libero package, with the shared asset pack."""
    import yaml

    python = PEER / "bin" / "python"
    package = subprocess.run([str(python), "-c", "import importlib.util as u; "
                              "print(list(u.find_spec('libero').submodule_search_locations)[0])"],
                             capture_output=True, text=True, check=True).stdout.strip() + "/libero"
    folder = work / "libero_config"
    folder.mkdir(exist_ok=True)
    assets = os.environ.get("LAMP_BENCH_LIBERO_ASSETS", f"{package}/assets")
    (folder / "config.yaml").write_text(yaml.safe_dump({
        "benchmark_root": package, "bddl_files": f"{package}/bddl_files", "init_states": f"{package}/init_files",
        "datasets": str(work / "datasets"), "assets": assets}))
    return {**os.environ, "LIBERO_CONFIG_PATH": str(folder), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}


def run_vla_eval(work: Path, tasks: int, episodes: int, shards: int) -> dict:
    env = peer_environment(work)
    server_script = work / "noop_server.py"
    server_script.write_text(NOOP_SERVER)
    ports = [free_port() for _ in range(shards)]
    cpu0, started = children_cpu(), time.perf_counter()
    servers = [subprocess.Popen([str(PEER / "bin" / "python"), str(server_script), str(p)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    try:
        time.sleep(3)  # servers listening
        runs = []
        for shard, port in enumerate(ports):
            config = {"server": {"url": f"ws://127.0.0.1:{port}"}, "output_dir": str(work / "vla_eval_results"),
                      "benchmarks": [{"benchmark": "vla_eval.benchmarks.libero.benchmark:LIBEROBenchmark",
                                      "episodes_per_task": episodes, "max_tasks": tasks, "max_steps": STEPS,
                                      "params": {"suite": "libero_spatial", "num_steps_wait": 10}}]}
            path = work / f"vla_eval_{shards}_{shard}.yaml"
            path.write_text(json.dumps(config))  # JSON is YAML
            command = [str(PEER / "bin" / "vla-eval"), "run", "--no-docker", "--yes", "--config", str(path)]
            if shards > 1:
                command += ["--shard-id", str(shard), "--num-shards", str(shards), "--eval-id", f"side{shards}"]
            runs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         text=True))
        outputs = [r.communicate()[0] for r in runs]
        wall = time.perf_counter() - started
        failed = [o[-2000:] for r, o in zip(runs, outputs) if r.returncode != 0]
        if failed:
            raise RuntimeError("vla-eval run failed:\n" + "\n".join(failed))
    finally:
        for s in servers:
            s.terminate()
            s.wait()
    return {"wall_s": wall, "cpu_s": children_cpu() - cpu0}


def run_lamp_bench(work: Path, task_ids: list[int], episodes: int, envs_per_worker: int, label: str) -> subprocess.Popen:
    out = work / f"lamp_{label}"
    command = [*LAMP_BENCH, "run", "--suite", "libero_spatial", "--policy", "noop",
               "--tasks", ",".join(map(str, task_ids)), "--episodes-per-task", str(episodes), "--out", str(out),
               "--executor", "inline", "--envs-per-worker", str(envs_per_worker), "--label", label]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def lamp_bench(work: Path, tasks: int, episodes: int, mode: str) -> dict:
    """mode: one (1 process), envs2 (--envs-per-worker 2), ceiling (2 independent processes)."""
    ids = list(range(tasks))
    cpu0, started = children_cpu(), time.perf_counter()
    if mode == "ceiling":
        runs = [run_lamp_bench(work, ids[i::2], episodes, 1, f"ceiling{i}") for i in range(2) if ids[i::2]]
    else:
        runs = [run_lamp_bench(work, ids, episodes, 2 if mode == "envs2" else 1, mode)]
    outputs = [r.communicate()[0] for r in runs]
    wall = time.perf_counter() - started
    failed = [o[-2000:] for r, o in zip(runs, outputs) if r.returncode != 0]
    if failed:
        raise RuntimeError("lamp-bench run failed:\n" + "\n".join(failed))
    return {"wall_s": wall, "cpu_s": children_cpu() - cpu0}


def rates(measured: dict, episodes: int) -> dict:
    steps = episodes * STEPS  # the no-op never succeeds: every episode runs its full length
    return {**measured, "episodes": episodes, "episodes_per_hour": episodes / measured["wall_s"] * 3600,
            "cpu_s_per_step": measured["cpu_s"] / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=4, help="LIBERO-Spatial tasks 0..N-1")
    parser.add_argument("--episodes", type=int, default=2, help="episodes (init states 0..E-1) per task")
    parser.add_argument("--lamp-bench-only", action="store_true",
                        help="only lamp-bench's three configurations (no peer needed; no ratios)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not args.lamp_bench_only:
        try:
            check_peer()
        except PeerMissing as missing:
            raise SystemExit(f"not run: {missing}")
    total = args.tasks * args.episodes
    result = {"command": {"tasks": args.tasks, "episodes": args.episodes, "lamp_bench_only": args.lamp_bench_only},
              "load_average_before": os.getloadavg(),
              "steps_per_episode": STEPS}
    with tempfile.TemporaryDirectory(prefix="side_by_side_") as tmp:
        work = Path(tmp)
        if not args.lamp_bench_only:
            result["vla_eval_1"] = rates(run_vla_eval(work, args.tasks, args.episodes, 1), total)
        result["lamp_bench_1"] = rates(lamp_bench(work, args.tasks, args.episodes, "one"), total)
        if not args.lamp_bench_only:
            result["vla_eval_2"] = rates(run_vla_eval(work, args.tasks, args.episodes, 2), total)
        result["lamp_bench_envs2"] = rates(lamp_bench(work, args.tasks, args.episodes, "envs2"), total)
        result["lamp_bench_ceiling2"] = rates(lamp_bench(work, args.tasks, args.episodes, "ceiling"), total)
    for n, lamp in (("1", "lamp_bench_1"), ("2", "lamp_bench_envs2")):
        if args.lamp_bench_only:
            break
        peer = result[f"vla_eval_{n}"]
        result[f"ratio_episodes_per_hour_{n}"] = result[lamp]["episodes_per_hour"] / peer["episodes_per_hour"]
        result[f"ratio_cpu_per_step_{n}"] = result[lamp]["cpu_s_per_step"] / peer["cpu_s_per_step"]
    result["envs2_share_of_ceiling"] = (result["lamp_bench_envs2"]["episodes_per_hour"]
                                        / result["lamp_bench_ceiling2"]["episodes_per_hour"])
    result["load_average_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k.startswith(("ratio", "envs2"))}, indent=1))


if __name__ == "__main__":
    main()
