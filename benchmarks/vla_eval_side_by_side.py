"""The same work through vla-eval 0.8.0 and through lamp-bench: a no-op policy ("hold still, gripper open") on
the same LIBERO-Spatial tasks and episodes (init states 0..E-1, 220 policy steps after 10 settle steps), in
one run, with one process each and with two processes each.

  vla-eval   `vla-eval run --no-docker` of its own LIBERO benchmark (vla_eval.benchmarks.libero) in
             .venv-vla-eval, against a model server built on vla-eval's PredictModelServer (one server per
             simulator process); two processes = two shards (--shard-id/--num-shards) of one eval id.
             As shipped, its env renders both of LIBERO's default cameras (agentview and wrist, 256 px)
             every step and sends the agentview image only, PNG-encoded.
  lamp-bench `lamp-bench run --policy noop` (one 224 px third-person camera, rendered 256 px); two
             processes = `--envs-per-worker 2`; the machine's two-process ceiling = two independent
             lamp-bench runs on half the tasks each, at the same time.

Reported: episodes per hour and CPU seconds per policy step (all processes of a configuration, the model
servers included), the ratios lamp-bench / vla-eval, and --envs-per-worker 2 as a share of the ceiling.
.venv-vla-eval needs LIBERO's stack beside vla-eval (`bash .ci/setup_peers --with-libero`); the script checks
and says what is missing. Both sides use the same LIBERO asset pack: lamp-bench's (LAMP_BENCH_LIBERO_ASSETS, else
the installed package's own). vla-eval's process gets it the way lamp-bench does (libero's `_assets_path_cache`,
set by a small launcher before `vla_eval.cli.main:main`, the `vla-eval` console script's entry point; libero
ignores its config's `assets` key for scenes and objects). Rendering: MUJOCO_GL as set, else egl (vla-eval's
`render: gpu` default leaves it alone; its `cpu` mode would force osmesa).

Every vla-eval episode is checked: vla-eval's log must show each episode ending after 220 steps, and the no-op
server (which records what it is sent) must have answered 220 observations per episode with a rendered
256 x 256 x 3 agentview image; the result file keeps both under "vla_eval_*"."checks".

Full run (quiet machine, ~19 min):  python benchmarks/vla_eval_side_by_side.py --tasks 4 --episodes 2
Smallest:                           python benchmarks/vla_eval_side_by_side.py --tasks 2 --episodes 1
lamp-bench's side alone (envs-per-worker 2 vs the two-process ceiling): add --lamp-bench-only
vla-eval's side alone: add --vla-eval-only (--shards 1 for one process only), e.g. the smallest proof
    python benchmarks/vla_eval_side_by_side.py --vla-eval-only --shards 1 --tasks 1 --episodes 1 --out /tmp/x.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PEER = REPO / ".venv-vla-eval"
RESULTS = Path(__file__).parent / "results" / "vla_eval_side_by_side.json"
STEPS = 220  # LIBERO-Spatial's protocol length (both harnesses' default)
LAMP_BENCH = [str(Path(sys.executable).with_name("lamp-bench"))]

# argv: port, stats file. Hold still, gripper open (LIBERO: -1 = open); after every episode it rewrites the
# stats file: per episode the observations it answered and the first agentview image's shape and spread.
NOOP_SERVER = """
import json, sys
import numpy as np
from vla_eval.model_servers.predict import PredictModelServer
from vla_eval.model_servers.serve import serve

class Noop(PredictModelServer):
    def __init__(self, stats_path):
        super().__init__(max_batch_size=1)
        self.stats_path, self.episodes, self.current = stats_path, [], None
    def predict(self, obs, ctx):
        if ctx.is_first or self.current is None:
            image = np.asarray(obs["images"]["agentview"])
            self.current = {"observations": 0, "image_shape": list(image.shape), "image_dtype": str(image.dtype),
                            "image_std": float(image.std()), "task": obs.get("task_description")}
        self.current["observations"] += 1
        action = np.zeros(7, np.float32)
        action[-1] = -1.0
        return {"actions": action}
    async def on_episode_end(self, result, ctx):
        await super().on_episode_end(result, ctx)
        if self.current is not None and result:
            self.episodes.append({**self.current, "steps_reported": result.get("steps")})
            self.current = None
            with open(self.stats_path, "w") as f:
                json.dump(self.episodes, f)
    def get_action_spec(self):
        return {}
    def get_observation_spec(self):
        return {}

serve(Noop(sys.argv[2]), host="127.0.0.1", port=int(sys.argv[1]))
"""

# argv: asset folder, then vla-eval's own arguments. The `vla-eval` console script with LIBERO's asset folder set
# first, as lamp-bench sets it (libero resolves scenes and objects through this module global only).
VLA_EVAL_LAUNCHER = """
import sys
import libero.libero
libero.libero._assets_path_cache = sys.argv.pop(1)
from vla_eval.cli.main import main
sys.argv[0] = "vla-eval"
main()
"""
EPISODE_LOG = re.compile(r"\] .* ep(\d+): (SUCCESS|FAIL) \(steps=(\d+)\)")


class PeerMissing(Exception):
    """The vla-eval environment cannot run LIBERO."""


SETUP_COMMAND = "bash .ci/setup_peers --with-libero"


def check_peer(work: Path) -> None:
    python = PEER / "bin" / "python"
    if not python.is_file():
        raise PeerMissing(f"{PEER} does not exist: build it with `{SETUP_COMMAND}`")
    try:
        env = peer_environment(work)
    except PeerMissing as missing:
        raise PeerMissing(f"{missing}: build it with `{SETUP_COMMAND}`") from None
    probe = subprocess.run([str(python), "-c", "import vla_eval, libero.libero, robosuite, mujoco, bddl; "
                            "import vla_eval.benchmarks.libero.benchmark"],
                           capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    if probe.returncode != 0:
        missing = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "import failed"
        raise PeerMissing(f"{PEER} has vla-eval but not LIBERO's stack ({missing}): build it with "
                          f"`{SETUP_COMMAND}`")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def libero_assets() -> Path:
    """The asset pack lamp-bench's side uses (LAMP_BENCH_LIBERO_ASSETS, else its libero package's own)."""
    from lamp_bench.harness.config import ConfigError
    from lamp_bench.suites.libero_stack import resolve_assets

    try:
        return Path(resolve_assets(None)).resolve()
    except ConfigError as error:
        raise SystemExit(f"not run: {error} (this script reads LAMP_BENCH_LIBERO_ASSETS)")


def peer_environment(work: Path) -> dict[str, str]:
    """LIBERO's config for the peer's own libero package (written once per work folder)."""
    import yaml

    folder = work / "libero_config"
    if not (folder / "config.yaml").is_file():
        python = PEER / "bin" / "python"
        found = subprocess.run([str(python), "-c", "import importlib.util as u; s = u.find_spec('libero'); "
                                "print(list(s.submodule_search_locations)[0] if s else '')"],
                               capture_output=True, text=True, check=True).stdout.strip()
        if not found:
            raise PeerMissing(f"{PEER} has no `libero` package")
        package = found + "/libero"
        folder.mkdir(exist_ok=True)
        (folder / "config.yaml").write_text(yaml.safe_dump({
            "benchmark_root": package, "bddl_files": f"{package}/bddl_files", "init_states": f"{package}/init_files",
            "datasets": str(work / "datasets"), "assets": str(libero_assets())}))
    return {**os.environ, "LIBERO_CONFIG_PATH": str(folder), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}


def wait_healthy(ports: list[int], servers: list[subprocess.Popen], timeout: float = 60.0) -> None:
    """Until every server answers GET /health (PredictModelServer's readiness route)."""
    deadline = time.monotonic() + timeout
    for port, server in zip(ports, servers):
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None:
                raise RuntimeError(f"the no-op model server on port {port} exited with {server.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the no-op model server on port {port} did not answer /health in {timeout:.0f} s")
            time.sleep(0.1)


def check_vla_eval_episodes(outputs: list[str], stats_files: list[Path], tasks: int, episodes: int) -> dict:
    """Every episode ran its full 220 steps (vla-eval's log) and the no-op server answered each of them, with a
    rendered image (the server's stats); raises otherwise."""
    logged = [(int(m.group(1)), m.group(2), int(m.group(3))) for o in outputs for m in EPISODE_LOG.finditer(o)]
    served = [e for f in stats_files if f.is_file() for e in json.loads(f.read_text())]
    expected = tasks * episodes
    problems = []
    if len(logged) != expected or any(steps != STEPS for _, _, steps in logged):
        problems.append(f"vla-eval logged {len(logged)} episodes with steps {[s for _, _, s in logged]}, "
                        f"expected {expected} x {STEPS}")
    if len(served) != expected or any(e["observations"] != STEPS for e in served):
        problems.append(f"the no-op server answered {[e['observations'] for e in served]} observations in "
                        f"{len(served)} episodes, expected {expected} x {STEPS}")
    if any(e["image_shape"] != [256, 256, 3] or e["image_dtype"] != "uint8" or e["image_std"] < 1.0 for e in served):
        problems.append(f"agentview images not rendered as expected: {served}")
    if problems:
        raise RuntimeError("vla-eval run incomplete: " + "; ".join(problems))
    return {"episodes_logged": len(logged), "steps_logged": sorted({s for _, _, s in logged}),
            "observations_served": [e["observations"] for e in served],
            "agentview": {"shape": served[0]["image_shape"], "dtype": served[0]["image_dtype"],
                          "min_std": min(e["image_std"] for e in served)}}


def run_vla_eval(work: Path, tasks: int, episodes: int, shards: int) -> dict:
    """`vla-eval run --no-docker` of its LIBERO benchmark, `shards` processes (shards of one eval id, sharing one
    recording database and its work queue), each against its own no-op model server. wall_s runs from the
    servers answering /health to the last shard's exit; cpu_s is every child's whole life, servers included."""
    env = peer_environment(work)
    server_script, launcher = work / "noop_server.py", work / "vla_eval_launcher.py"
    server_script.write_text(NOOP_SERVER)
    launcher.write_text(VLA_EVAL_LAUNCHER)
    ports = [free_port() for _ in range(shards)]
    stats = [work / f"noop_stats_{shards}_{i}.json" for i in range(shards)]
    results, logs = work / f"vla_eval_results_{shards}", work / f"vla_eval_{shards}_logs"
    # A kept --work folder from an earlier run: its recording database would mark the shards' items done.
    for stale in (results, logs):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in stats:
        stale.unlink(missing_ok=True)
    logs.mkdir()
    cpu0 = children_cpu()
    servers = [subprocess.Popen([str(PEER / "bin" / "python"), str(server_script), str(p), str(f)], env=env,
                                stdin=subprocess.DEVNULL, stdout=(logs / f"server{i}.log").open("w"),
                                stderr=subprocess.STDOUT) for i, (p, f) in enumerate(zip(ports, stats))]
    try:
        wait_healthy(ports, servers)
        started = time.perf_counter()
        runs = []
        for shard, port in enumerate(ports):
            config = {"server": {"url": f"ws://127.0.0.1:{port}"}, "output_dir": str(results),
                      "benchmarks": [{"benchmark": "vla_eval.benchmarks.libero.benchmark:LIBEROBenchmark",
                                      "episodes_per_task": episodes, "max_tasks": tasks, "max_steps": STEPS,
                                      # seed 7: LIBEROBenchmark's default (OpenVLA's), stated to quiet its warning
                                      "params": {"suite": "libero_spatial", "num_steps_wait": 10, "seed": 7}}]}
            path = work / f"vla_eval_{shards}_{shard}.yaml"
            path.write_text(json.dumps(config))  # JSON is YAML
            command = [str(PEER / "bin" / "python"), str(launcher), str(libero_assets()),
                       "run", "--no-docker", "--yes", "--config", str(path)]
            if shards > 1:
                command += ["--shard-id", str(shard), "--num-shards", str(shards), "--eval-id", f"side{shards}"]
            runs.append(subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True))
        outputs = [r.communicate()[0] for r in runs]
        wall = time.perf_counter() - started
        for shard, output in enumerate(outputs):
            (logs / f"shard{shard}.log").write_text(output)
        failed = [o[-3000:] for r, o in zip(runs, outputs) if r.returncode != 0]
        if failed:
            raise RuntimeError("vla-eval run failed:\n" + "\n".join(failed))
    finally:
        for s in servers:
            s.terminate()
            s.wait()
    checks = check_vla_eval_episodes(outputs, stats, tasks, episodes)
    return {"wall_s": wall, "cpu_s": children_cpu() - cpu0, "processes": shards, "checks": checks}


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
    side = parser.add_mutually_exclusive_group()
    side.add_argument("--lamp-bench-only", action="store_true",
                      help="only lamp-bench's three configurations (no peer needed; no ratios)")
    side.add_argument("--vla-eval-only", action="store_true", help="only vla-eval's configurations (no ratios)")
    parser.add_argument("--shards", default="1,2",
                        help="vla-eval's configurations: processes (shards) per run, comma-separated (default 1,2)")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the work folder here (configs, logs, vla-eval's recordings); default: a temporary one")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    shards = [int(n) for n in args.shards.split(",")]
    if any(n < 1 for n in shards) or len(set(shards)) != len(shards):
        parser.error(f"--shards {args.shards}: distinct positive counts")
    if not args.vla_eval_only and shards != [1, 2] and not args.lamp_bench_only:
        parser.error("--shards other than 1,2 needs --vla-eval-only (the ratios compare 1 and 2 processes)")
    total = args.tasks * args.episodes
    result = {"command": {"tasks": args.tasks, "episodes": args.episodes, "lamp_bench_only": args.lamp_bench_only,
                          "vla_eval_only": args.vla_eval_only, "shards": shards},
              "load_average_before": os.getloadavg(),
              "steps_per_episode": STEPS}
    with tempfile.TemporaryDirectory(prefix="side_by_side_") as tmp:
        work = Path(tmp) if args.work is None else args.work.resolve()
        work.mkdir(parents=True, exist_ok=True)
        if not args.lamp_bench_only:
            try:
                check_peer(work)
            except PeerMissing as missing:
                raise SystemExit(f"not run: {missing}")
            result["libero_assets"] = str(libero_assets())
            result["mujoco_gl"] = os.environ.get("MUJOCO_GL", "egl")
        if args.vla_eval_only:
            for n in shards:
                result[f"vla_eval_{n}"] = rates(run_vla_eval(work, args.tasks, args.episodes, n), total)
        else:
            if not args.lamp_bench_only:
                result["vla_eval_1"] = rates(run_vla_eval(work, args.tasks, args.episodes, 1), total)
            result["lamp_bench_1"] = rates(lamp_bench(work, args.tasks, args.episodes, "one"), total)
            if not args.lamp_bench_only:
                result["vla_eval_2"] = rates(run_vla_eval(work, args.tasks, args.episodes, 2), total)
            result["lamp_bench_envs2"] = rates(lamp_bench(work, args.tasks, args.episodes, "envs2"), total)
            result["lamp_bench_ceiling2"] = rates(lamp_bench(work, args.tasks, args.episodes, "ceiling"), total)
    if not args.lamp_bench_only and not args.vla_eval_only:
        for n, lamp in (("1", "lamp_bench_1"), ("2", "lamp_bench_envs2")):
            peer = result[f"vla_eval_{n}"]
            result[f"ratio_episodes_per_hour_{n}"] = result[lamp]["episodes_per_hour"] / peer["episodes_per_hour"]
            result[f"ratio_cpu_per_step_{n}"] = result[lamp]["cpu_s_per_step"] / peer["cpu_s_per_step"]
    if not args.vla_eval_only:
        result["envs2_share_of_ceiling"] = (result["lamp_bench_envs2"]["episodes_per_hour"]
                                            / result["lamp_bench_ceiling2"]["episodes_per_hour"])
    result["load_average_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    shown = ("ratio", "envs2") if not args.vla_eval_only else ("vla_eval",)
    print(json.dumps({k: v for k, v in result.items() if k.startswith(shown)}, indent=1))


if __name__ == "__main__":
    main()
