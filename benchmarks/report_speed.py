"""Time `build_report` (all formats, figures included) over a synthetic store of >= 100,000 episode records
written with the real ShardWriter; target: <= 10 s. Writes benchmarks/results/report_speed.json.

    python benchmarks/report_speed.py [--store DIR]   (DIR: keep the store, reuse it next time)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from lamp_bench.harness.provenance import base_provenance
from lamp_bench.reports import FORMATS, build_report
from lamp_bench.results.paper import LIBERO_PLUS_CATEGORIES
from lamp_bench.results.store import EpisodeStore

TARGET_S = 10.0
CATEGORIES = LIBERO_PLUS_CATEGORIES
SIMPLER = ("PutSpoonOnTableClothInScene-v1", "PutCarrotOnPlateInScene-v1",
           "StackGreenCubeOnYellowCubeBakedTexInScene-v1", "PutEggplantInBasketScene-v1")
LIBERO = {"libero_spatial": 0.85, "libero_object": 0.82, "libero_goal": 0.76, "libero_10": 0.5}
LIBERO_LABELS = {"openvla": -0.1, "no-motion": -0.05, "ungated": -0.02, "steps-5": 0.0, "steps-10": 0.0,
                 "midas": -0.01, "zoedepth": -0.005, "lamp": 0.0}
PLUS_LABELS = {"openvla": 0.51, "no-motion": 0.58, "steps-5": 0.67, "steps-10": 0.675, "lamp": 0.677,
               "lamp-official": 0.66}
SIMPLER_LABELS = {"openvla": 0.4, "no-motion": 0.45, "lamp": 0.5}


def episodes():
    """(label, suite, task_id, init_index, seed, task_name, p_success, info) for every synthetic episode."""
    for label, shift in LIBERO_LABELS.items():
        for suite, p in LIBERO.items():
            for task in range(10):
                for init in range(50):
                    yield label, suite, task, init, 0, f"{suite}_task_{task}", p + shift, {}
        for task in range(90):
            for init in range(30):
                yield label, "libero_90", task, init, 0, f"libero_90_task_{task}", 0.7 + shift, {}
    for label, p in PLUS_LABELS.items():
        backend = "official" if label.endswith("official") else "lamp-bench"
        for task in range(10_030):
            info = {"category": CATEGORIES[task % 7], "difficulty_level": 1 + task % 5, "backend": backend}
            yield label, "libero_plus", task, 0, 0, f"plus_task_{task}", p - 0.03 * (task % 5), info
    for label, p in SIMPLER_LABELS.items():
        for task, name in enumerate(SIMPLER):
            for init in range(24):
                for seed in range(10):
                    yield label, "simpler_widowx", task, init, seed, name, p, {"grasp_p": min(1.0, p + 0.3)}


def write_store(root: Path, shards: int = 8) -> int:
    rng = np.random.default_rng(0)
    base = base_provenance()
    # the keys the real suites record under provenance["suite"]
    libero = {"assets": "/assets/libero", "assets_identity": "c0ffee0123456789", "assets_stand_ins": True,
              "assets_note": "asset pack has stand-in meshes/textures: not comparable with published LIBERO numbers",
              "protocol": {"settle_steps": 10}}
    suite_prov = {
        "libero_plus": {**libero, "backend": "mixed"},
        "simpler_widowx": {"assets": "/assets/maniskill", "assets_identity": "0a9e33c1d2b4f567", "comparable": False,
                           "assets_stand_ins": {"stages": "flat slabs"},
                           "assets_note": "asset pack has stand-ins: not comparable with published SimplerEnv results"},
    }
    writers = [EpisodeStore(root).writer() for _ in range(shards)]
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    count = 0
    for i, (label, suite, task, init, seed, name, p, info) in enumerate(episodes()):
        success = bool(rng.random() < p)
        info = dict(info)
        if "grasp_p" in info:
            grasp = success or bool(rng.random() < info.pop("grasp_p"))
            info.update(partial_success=grasp, consecutive_grasp=grasp and bool(rng.random() < 0.8))
        policy = "lamp" if label == "lamp-official" else label
        writers[i % shards].append({
            "label": label, "policy": policy, "suite": suite, "task_id": task, "init_index": init, "seed": seed,
            "task_name": name, "instruction": name.replace("_", " "), "status": "success" if success else "failure",
            "success": success, "steps": int(rng.integers(50, 500)), "wall_time_s": float(rng.random() * 60),
            "failure_reason": None if success else "max_steps",
            "checkpoint_hash": hashlib.sha256(policy.encode()).hexdigest(),
            "finished_at": (start + timedelta(seconds=i)).isoformat(),
            "policy_config": {"preset": "tiny", "euler_steps": 1, "gated": True, "depth": "dav2"},
            "info": info, "provenance": {**base, "suite": suite_prov.get(suite, libero)},
        })
        count += 1
    for writer in writers:
        writer.close()
    profile = root / "profile"
    profile.mkdir()
    components = {"vision": 18.0, "prefill": 60.0, "decode": 40.0}
    motion = {"depth": 12.0, "lift": 1.0, "flow": 9.0, "cross_attention": 6.0}
    for policy, extra in (("no-motion", {}), ("lamp", motion)):
        total = sum(components.values()) + sum(extra.values())
        (profile / f"{policy}.json").write_text(json.dumps({
            "policy": policy, "preset": "tiny", "batch": 1, "components_ms": {**components, **extra}, "total_ms": total,
            "ratio_to_no_motion": total / sum(components.values())}))
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, help="write the synthetic store here and keep it; reused if it exists")
    args = parser.parse_args()
    root = args.store or Path(tempfile.mkdtemp(prefix="lamp-report-speed-"))
    try:
        t0 = time.perf_counter()
        count = len(EpisodeStore(root).records()) if (root / "episodes").is_dir() else write_store(root)
        write_s = time.perf_counter() - t0
        load = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        files = build_report(root, formats=FORMATS)
        report_s, report_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        t0 = time.perf_counter()
        records = len(EpisodeStore(root).records())
        read_s = time.perf_counter() - t0
        result = {
            "what": "build_report over a synthetic store, all formats (md, tex, csv, html) and figures",
            "episode_records": count, "deduplicated_records": records, "shard_bytes": sum(
                p.stat().st_size for p in (root / "episodes").glob("*.jsonl")),
            "build_report_s": round(report_s, 2), "build_report_cpu_s": round(report_cpu_s, 2),
            "store_read_s": round(read_s, 2), "target_s": TARGET_S, "meets_target": report_s <= TARGET_S,
            "files_written": len(files), "store_write_or_reuse_s": round(write_s, 1),
            "load_average_1min_before": round(load, 2),
            "note": "wall time depends on what else runs on the machine; cpu time is this process alone",
            "machine": f"{platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cpu(s)",
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        out = Path(__file__).parent / "results" / "report_speed.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    finally:
        if args.store is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
