"""Throughput of `lamp-bench serve` with 1, 2 and 4 concurrent clients, with and without batching;
writes benchmarks/results/serve_throughput.json.

The server runs LaMP on the `small` preset (206M parameters, random weights of the real size; the depth
estimator random too: `random_depth`, as `lamp-bench profile` does) over the vla-eval protocol, with camera
intrinsics from the client. Each client is one websocket (one slot of lamp-bench's `remote` policy,
whose K slots send their requests at once). Batching is switched live through vla-eval's
`GET /config?max_batch_size=N` on the same server: N = 1 (off) or N = clients (on, --max-wait-ms 50).
Figures: observations answered per second and the median round trip a client sees.

    python benchmarks/serve_throughput.py [--rounds 5] [--clients 1,2,4] [--policy lamp] [--preset small]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from lamp_bench.harness.policy import Observation, Task
from lamp_bench.harness.remote.client_policy import RemotePolicy

OUT = Path(__file__).resolve().parent / "results" / "serve_throughput.json"
LAMP_BENCH = str(Path(sys.executable).parent / "lamp-bench")


def start_server(policy: str, preset: str, max_wait_ms: float) -> tuple[subprocess.Popen, str, dict]:
    command = [LAMP_BENCH, "serve", "--policy", policy, "--preset", preset, "--protocol", "vla-eval", "--port", "0",
               "--max-batch", "1", "--max-wait-ms", str(max_wait_ms), "--camera-from-client",
               "--kwargs", json.dumps({"random_depth": True})]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        match = re.search(r"ws://127\.0\.0\.1:\d+", " ".join(lines))
        if match:
            return proc, match.group(0), {"command": command[1:]}
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("lamp-bench serve did not start:\n" + "".join(lines))


def set_batch(url: str, size: int) -> dict:
    with urllib.request.urlopen(url.replace("ws://", "http://") + f"/config?max_batch_size={size}", timeout=30) as r:
        return json.loads(r.read())


def observations(k: int, size: int) -> list[Observation]:
    rng = np.random.default_rng(0)
    intrinsics = np.array([[-1.2 * size, 0, (size - 1) / 2], [0, 1.2 * size, (size - 1) / 2], [0, 0, 1]])
    return [Observation("put the black bowl on the plate",
                        images={"third_person": rng.integers(0, 256, (size, size, 3), dtype=np.uint8)},
                        intrinsics={"third_person": intrinsics},
                        proprio=np.array([0, 0, 1, 1, 0, 0, 0, 0.04, -0.04], np.float32)) for _ in range(k)]


def measure(url: str, clients: int, batched: bool, rounds: int, image_size: int) -> dict:
    config = set_batch(url, clients if batched else 1)
    policy = RemotePolicy(server=url, protocol="vla-eval", image_size=image_size, resize="suite",
                          cameras=["third_person"], timeout_s=600)
    try:
        slots = list(range(clients))
        policy.reset([Task("libero_spatial", 0, "t", "put the black bowl on the plate")] * clients, slots, slots)
        obs = observations(clients, image_size)
        policy.act(obs, slots)  # warm-up round
        before = set_batch(url, clients if batched else 1)
        started = time.perf_counter()
        for _ in range(rounds):
            policy.act(obs, slots)
        wall = time.perf_counter() - started
        after = set_batch(url, clients if batched else 1)
        latency = policy.describe()["policy_config"]["latency_ms"]
    finally:
        policy.close()
    answered = after["requests"] - before["requests"]
    passes = after["batches"] - before["batches"]
    return {"clients": clients, "batching": batched, "max_batch_size": config["max_batch_size"], "rounds": rounds,
            "observations": answered, "forward_passes": passes, "wall_s": round(wall, 3),
            "observations_per_s": round(answered / wall, 3), "median_round_trip_ms": latency.get("median")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (each: every client asks once)")
    parser.add_argument("--clients", default="1,2,4")
    parser.add_argument("--policy", default="lamp")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--max-wait-ms", type=float, default=50.0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    load_before = os.getloadavg()
    proc, url, server = start_server(args.policy, args.preset, args.max_wait_ms)
    try:
        probe = RemotePolicy(server=url, protocol="vla-eval", cameras=["third_person"])
        image_size = probe.describe()["policy_config"]["server_metadata"]["lamp"]["needs"]["image_size"]
        probe.close()
        cases = [measure(url, k, batched, args.rounds, image_size) for k in counts for batched in (False, True)]
    finally:
        proc.terminate()
        proc.wait(60)
    result = {
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "load_average_before": load_before,
                    "load_average_after": os.getloadavg()},
        "settings": {"policy": args.policy, "preset": args.preset, "rounds": args.rounds,
                     "max_wait_ms": args.max_wait_ms, "image_size": image_size, "protocol": "vla-eval (raw images)",
                     "server": server},
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for case in cases:
        print(f"clients {case['clients']}  batching {'on ' if case['batching'] else 'off'}  "
              f"{case['observations_per_s']:7.3f} obs/s  {case['forward_passes']} passes for "
              f"{case['observations']} obs  median round trip {case['median_round_trip_ms']} ms")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
