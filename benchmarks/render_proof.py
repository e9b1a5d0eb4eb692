"""Proof that an exact rendering saving leaves observations bit-identical, per (suite, task, camera, size).

Whole episodes of each task run under one fixed action sequence (a smooth pseudo-random sweep of the arm,
the gripper opening and closing, the same for every task); at every frame, each camera is drawn on the full
path (robosuite's sim.render) and on every exact saving of suites/render_savings.py, RGB and depth hashed and
compared. A saving that ever differs for a (suite, task, camera) is recorded as such and no longer drawn for
it. The result is merged into suites/render_proof.json (read by suites/libero.py: a saving is used only where
this proof ran on the same stack and never saw a difference) and summarised in
benchmarks/results/render_proof.json.

Full proof of the four LIBERO suites (quiet machine, 13 min on 2 cores; --jobs splits the tasks across processes):
    python benchmarks/render_proof.py --jobs 2
LIBERO-Plus's default camera and light samples (5 per category, 9 min; --plus-per-category all: every task, a cluster job):
    python benchmarks/render_proof.py --suites "" --plus-categories "Camera Viewpoints,Light Conditions" \
        --plus-per-category 5 --jobs 2 --results benchmarks/results/render_proof_libero_plus.json
Small check (what CI-sized runs use):
    python benchmarks/render_proof.py --suites libero_spatial --tasks 0,1 --steps 10
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import time
from pathlib import Path

import numpy as np

from lamp_bench.harness.config import parse_ids
from lamp_bench.harness.policy import PolicyNeeds
from lamp_bench.harness.provenance import hash_tree_listing
from lamp_bench.harness.suite import Episode
from lamp_bench.suites.render_savings import (EXACT_SAVINGS, FULL_PATH, PROOF_FILE, OffscreenRenderer, RenderProof,
                                              frame_digest, proof_key, stack_identity)

RESULTS = Path(__file__).parent / "results" / "render_proof.json"
CAMERA_ROLES = ("third_person", "wrist")


def fixed_actions(steps: int, seed: int = 0) -> np.ndarray:
    """(steps, 7) the same arm sweep for every task: low-pass filtered noise in [-1, 1], gripper toggling."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(-1, 1, size=(steps + 20, 6))
    kernel = np.ones(20) / 20
    smooth = np.stack([np.convolve(noise[:, i], kernel, mode="valid")[:steps] for i in range(6)], axis=1)
    gripper = np.where((np.arange(steps) // 40) % 2 == 0, -1.0, 1.0)[:, None]
    return np.clip(np.concatenate([smooth * 2.5, gripper], axis=1), -1, 1)


def build_suite(name: str, plus_categories: str | None, plus_per_category: str):
    from lamp_bench.harness.registry import SUITES, load_builtin_entries

    load_builtin_entries()
    if name == "libero_plus":
        return SUITES.build(name, categories=plus_categories, per_category=plus_per_category)
    return SUITES.build(name)


def prove_task(suite_name: str, task_id: int, steps: int | None, episodes: int, plus_categories: str | None,
               plus_per_category: str) -> dict:
    """Proof entries of one task (all cameras) plus timings."""
    suite = build_suite(suite_name, plus_categories, plus_per_category)
    task = suite.task(task_id)
    size = suite.protocol.render_size
    env = suite.make_env(PolicyNeeds(cameras=CAMERA_ROLES, depth=True, image_size=size))
    cameras = [env_camera(role) for role in CAMERA_ROLES]
    n = steps or suite.max_steps(task)
    whole = n >= suite.max_steps(task)  # shorter runs are recorded, and refused by the runtime
    actions = fixed_actions(n)
    results = {c: {s: {"frames": 0, "rgb_identical": True, "depth_identical": True, "first_rgb_difference": None,
                       "first_depth_difference": None, "episodes": episodes, "steps": n, "whole_episodes": whole}
                   for s in EXACT_SAVINGS} for c in cameras}
    seconds = {c: {"full": [], **{s: [] for s in EXACT_SAVINGS}} for c in cameras}
    digests, stack = [], None
    try:
        for init in range(episodes):
            env.reset(Episode(suite.name, task_id, init, 0))
            renderer = OffscreenRenderer(env.sim_env.sim, size)  # a reset loads a new model: one per episode
            stack = stack or stack_identity(renderer.context, hash_tree_listing(str(suite.assets)))
            try:
                for frame in range(n + 1):
                    live = compare_frame(renderer, cameras, results, seconds, digests, (init, frame))
                    if not live or frame == n:
                        break
                    _, _, done, _ = env._env.step(actions[frame])
                    if done:
                        break
            finally:
                del renderer  # before the next reset frees the model and context it holds
    finally:
        env.close()
    entries = {proof_key(suite.name, task.name, c, size): results[c] for c in cameras}
    timing = {proof_key(suite.name, task.name, c, size): {k: float(np.median(v)) if v else None
                                                         for k, v in seconds[c].items()} for c in cameras}
    return {"stack": stack, "entries": entries, "seconds_per_frame": timing, "frames_digest": digest_of(digests)}


def env_camera(role: str) -> str:
    from lamp_bench.suites.libero import CAMERAS

    return CAMERAS[role]


def compare_frame(renderer, cameras, results, seconds, digests, where) -> bool:
    """Draw every camera on the full path and on each saving still standing; False once none stands."""
    live = False
    for camera in cameras:
        started = time.perf_counter()
        full = renderer.render(camera, FULL_PATH, depth=True)
        seconds[camera]["full"].append(time.perf_counter() - started)
        full_digest = frame_digest(full)
        digests.append(full_digest)
        for saving, path in EXACT_SAVINGS.items():
            entry = results[camera][saving]
            if not entry["rgb_identical"]:  # no policy may use it any more: stop paying for it
                continue
            live = True
            started = time.perf_counter()
            got = frame_digest(renderer.render(camera, path, depth=True))
            seconds[camera][saving].append(time.perf_counter() - started)
            entry["frames"] += 1
            for part, index in (("rgb", 0), ("depth", 1)):
                if entry[f"{part}_identical"] and got[index] != full_digest[index]:
                    entry[f"{part}_identical"], entry[f"first_{part}_difference"] = False, list(where)
    return live


def digest_of(digests: list) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(digests).encode()).hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", default="libero_spatial,libero_object,libero_goal,libero_10")
    parser.add_argument("--tasks", default=None, help="task ids (e.g. 0-9); default: every task of each suite")
    parser.add_argument("--steps", type=int, default=None, help="steps per episode; default: the protocol's max")
    parser.add_argument("--episodes", type=int, default=1, help="init states per task")
    parser.add_argument("--plus-categories", default=None, help="also LIBERO-Plus tasks of these categories")
    parser.add_argument("--plus-per-category", default="all")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--proof", type=Path, default=PROOF_FILE)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    suites = [s for s in args.suites.split(",") if s] + (["libero_plus"] if args.plus_categories else [])
    work = []
    for name in suites:
        suite = build_suite(name, args.plus_categories, args.plus_per_category)
        ids = parse_ids(args.tasks) or [t.task_id for t in suite.tasks()]
        work += [(name, t) for t in ids]
    started = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(prove_task, s, t, args.steps, args.episodes, args.plus_categories,
                               args.plus_per_category) for s, t in work]
        done = [f.result() for f in futures]
    stacks = {json.dumps(d["stack"], sort_keys=True) for d in done}
    if len(stacks) != 1:
        raise SystemExit(f"the tasks ran on {len(stacks)} different rendering stacks; run on one machine")
    stack = done[0]["stack"]
    entries = {k: v for d in done for k, v in d["entries"].items()}
    proof = RenderProof.load(args.proof).merged(stack, entries)
    args.proof.write_text(json.dumps(proof.to_json(), indent=1, sort_keys=True) + "\n")
    summary = {
        "command": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "wall_s": round(time.perf_counter() - started, 1), "stack": stack, "proof_identity": proof.identity,
        "identical": {k: {s: r["rgb_identical"] for s, r in v.items()} for k, v in entries.items()},
        "entries": entries,
        "seconds_per_frame": {k: v for d in done for k, v in d["seconds_per_frame"].items()},
        "frames_digest": {f"{s}/{t}": d["frames_digest"] for (s, t), d in zip(work, done)},
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: summary[k] for k in ("wall_s", "identical", "seconds_per_frame")}, indent=1))


if __name__ == "__main__":
    main()
