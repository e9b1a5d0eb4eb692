"""Round-trip overhead of a remote policy per step on localhost, for each protocol; writes
benchmarks/results/remote_overhead.json.

`lamp-bench serve` serves `noop` (no compute: it answers "hold still") at 224 px with both cameras, so
what is timed is the protocol alone: lamp-bench's `remote` policy encoding two 224x224 RGB images +
state + camera geometry, the websocket round trip, the server's decoding, observation mapping and
batching thread, and the reply. Target: median <= 5 ms per step (under 5% of a 120 ms VLA step).
vla-eval is timed with lossless raw images (lamp-bench's default) and with PNG (vla-eval's own default).

    python benchmarks/remote_overhead.py [--steps 500] [--warmup 20]
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
from pathlib import Path

import numpy as np

from lamp_bench.harness.policy import Observation, Task
from lamp_bench.harness.remote.client_policy import RemotePolicy

OUT = Path(__file__).resolve().parent / "results" / "remote_overhead.json"
LAMP_BENCH = str(Path(sys.executable).parent / "lamp-bench")
TARGET_MEDIAN_MS = 5.0
SIZE = 224
CASES = (("openpi", "raw"), ("vla-eval", "raw"), ("vla-eval", "png"))


def start_server(protocol: str) -> tuple[subprocess.Popen, str]:
    kwargs = json.dumps({"cameras": ["third_person", "wrist"], "image_size": SIZE})
    proc = subprocess.Popen([LAMP_BENCH, "serve", "--policy", "noop", "--protocol", protocol, "--port", "0",
                             "--max-batch", "1", "--kwargs", kwargs],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        match = re.search(r"ws://127\.0\.0\.1:\d+", " ".join(lines))
        if match:
            return proc, match.group(0)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("lamp-bench serve did not start:\n" + "".join(lines))


def observation(rng: np.random.Generator) -> Observation:
    k = np.array([[-200.0, 0, 111.5], [0, 200, 111.5], [0, 0, 1]])
    return Observation("put the black bowl on the plate",
                       images={r: rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for r in ("third_person", "wrist")},
                       intrinsics={"third_person": k, "wrist": k}, extrinsics={"third_person": np.eye(4), "wrist": np.eye(4)},
                       proprio=np.array([0, 0, 1, 1, 0, 0, 0, 0.04, -0.04], np.float32))


def measure(protocol: str, image_format: str, steps: int, warmup: int) -> dict:
    proc, url = start_server(protocol)
    try:
        policy = RemotePolicy(server=url, protocol=protocol, image_size=SIZE, resize="suite", image_format=image_format,
                              replan_steps=1)
        rng = np.random.default_rng(0)
        frames = [observation(rng) for _ in range(8)]  # fresh pixels each step (PNG cost depends on content)
        policy.reset([Task("libero_spatial", 0, "t", frames[0].instruction, dataset="libero_spatial")], [0], [0])
        times = []
        for i in range(warmup + steps):
            started = time.perf_counter()
            policy.act([frames[i % len(frames)]], [0])
            if i >= warmup:
                times.append((time.perf_counter() - started) * 1000)
        policy.close()
    finally:
        proc.terminate()
        proc.wait(30)
    t = np.asarray(times)
    return {"protocol": protocol, "image_format": image_format if protocol == "vla-eval" else "openpi msgpack_numpy",
            "steps": steps, "median_ms": round(float(np.median(t)), 3), "p90_ms": round(float(np.percentile(t, 90)), 3),
            "mean_ms": round(float(t.mean()), 3), "max_ms": round(float(t.max()), 3),
            "meets_target": bool(np.median(t) <= TARGET_MEDIAN_MS)}


ECHO_SERVER = """
import asyncio, sys
from websockets.asyncio.server import serve
async def echo(ws):
    async for frame in ws:
        await ws.send(frame[:64])  # a short reply, as an action is
async def main():
    async with serve(echo, "127.0.0.1", 0, compression=None, max_size=None, ping_interval=None) as s:
        print(f"ws://127.0.0.1:{s.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Future()
asyncio.run(main())
"""


def measure_floor(steps: int, warmup: int) -> dict:
    """The machine's floor: the same request bytes through a bare websockets echo server (no decoding,
    no policy, no threads), sent from a synchronous client."""
    from websockets.sync.client import connect

    from lamp_bench.harness.remote import codec, mapping

    proc = subprocess.Popen([sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        options = mapping.WireOptions.for_protocol("openpi", image_size=SIZE, resize="suite")
        frame = codec.openpi_pack(mapping.build_request(observation(np.random.default_rng(0)), "libero", options))
        times = []
        with connect(url, compression=None, max_size=None) as ws:
            for i in range(warmup + steps):
                started = time.perf_counter()
                ws.send(frame)
                ws.recv()
                if i >= warmup:
                    times.append((time.perf_counter() - started) * 1000)
    finally:
        proc.kill()
        proc.wait()
    t = np.asarray(times)
    return {"protocol": "floor: bare websockets echo", "image_format": f"{len(frame)} bytes", "steps": steps,
            "median_ms": round(float(np.median(t)), 3), "p90_ms": round(float(np.percentile(t, 90)), 3),
            "mean_ms": round(float(t.mean()), 3), "max_ms": round(float(t.max()), 3),
            "meets_target": bool(np.median(t) <= TARGET_MEDIAN_MS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    load_before = os.getloadavg()
    cases = [measure_floor(args.steps, args.warmup)] + [measure(p, f, args.steps, args.warmup) for p, f in CASES]
    result = {
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "load_average_before": load_before,
                    "load_average_after": os.getloadavg()},
        "settings": {"steps": args.steps, "warmup": args.warmup, "images": f"2 x {SIZE}x{SIZE}x3 uint8",
                     "served_policy": "noop (no compute)", "transport": "websocket on 127.0.0.1"},
        "target": {"median_ms": TARGET_MEDIAN_MS},
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for case in cases:
        print(f"{case['protocol']:28s} {case['image_format']:22s} median {case['median_ms']:7.2f} ms  "
              f"p90 {case['p90_ms']:7.2f} ms  target met: {case['meets_target']}")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
