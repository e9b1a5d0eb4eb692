"""Per-episode reset cost of LIBERO and whether a soft reset (model kept) reproduces the same trajectories.

For each task: `--episodes` episodes (init states 0, 1, ...) in one environment with LIBERO's hard reset on
every episode, actions logged (the fixed arm sweep of benchmarks/render_proof.py, or a no-op policy with
--noop); then the same episodes in a fresh environment that soft-resets from the second episode on, the
logged actions replayed. At every step the full simulator state (time, qpos, qvel, act) and the
proprioception are compared for exact equality (plus controls and the solver's warm start). Timings: reset
seconds, hard and soft, and seconds per step, with one 256 px camera (so the render context's rebuild is
included) unless --no-camera; with the camera also the reset's share of an episode of the protocol's length. With --write-proof the per-task verdicts go into
suites/reset_proof.json, which suites/libero.py reads (soft resets only where identical).

Timings with the camera (quiet machine), LIBERO-Spatial:
    python benchmarks/reset_cost.py --suites libero_spatial --tasks 0,1 --episodes 3 --steps 0 --write-proof
Proof of every task without rendering (drawing only reads the simulator state, so the trajectory
verdict is the same; timings then exclude the camera and the reset share is not reported):
    python benchmarks/reset_cost.py --suites libero_spatial,libero_object,libero_goal,libero_10 \
        --episodes 3 --steps 0 --jobs 2 --no-camera --write-proof --out benchmarks/results/reset_proof_all.json
Small run:  python benchmarks/reset_cost.py --suites libero_spatial --tasks 0 --episodes 3 --steps 50
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from render_proof import fixed_actions  # noqa: E402  (the same action sequence as the render proof)

from lamp_bench.harness.config import parse_ids
from lamp_bench.harness.policy import PolicyNeeds
from lamp_bench.harness.registry import SUITES, load_builtin_entries
from lamp_bench.harness.suite import Episode
from lamp_bench.suites.render_resets import RESET_PROOF_FILE, ResetProof, reset_key, reset_stack

RESULTS = Path(__file__).parent / "results" / "reset_cost.json"
NOOP = np.array([0, 0, 0, 0, 0, 0, -1.0])


def state_of(env) -> np.ndarray:
    sim = env.sim_env.sim
    data = sim.data._data  # the solver's warm start and the controls too: hidden state shows up there first
    return np.concatenate([sim.get_state().flatten(), data.act, data.ctrl, data.qacc_warmstart])


def run_episodes(suite, task_id: int, episodes: int, steps: int, actions: np.ndarray, soft: bool,
                 camera: bool) -> dict:
    """Episodes 0..episodes-1 of one task in one environment; states and proprio per step, timings."""
    cameras = ("third_person",) if camera else ()
    env = suite.make_env(PolicyNeeds(cameras=cameras, proprio=True, image_size=224))
    env.soft_reset_allowed = lambda task: soft
    resets, step_s, trajectories, kinds = [], [], [], []
    try:
        for init in range(episodes):
            started = time.perf_counter()
            obs = env.reset(Episode(suite.name, task_id, init, 0))
            resets.append(time.perf_counter() - started)
            kinds.append(env.episode_info()["reset"])
            states, proprio = [state_of(env)], [obs.proprio]
            for t in range(steps):
                started = time.perf_counter()
                result = env.step(actions[t])
                step_s.append(time.perf_counter() - started)
                states.append(state_of(env))
                proprio.append(result.observation.proprio)
            trajectories.append((np.stack(states), np.stack(proprio)))
    finally:
        env.close()
    return {"reset_s": resets, "step_s": step_s, "trajectories": trajectories, "kinds": kinds}


def compare(hard: list, soft: list) -> dict:
    """First (episode, step) where the soft-reset trajectory leaves the hard-reset one, if any."""
    for episode, ((hs, hp), (ss, sp)) in enumerate(zip(hard, soft)):
        for step in range(len(hs)):
            if not (np.array_equal(hs[step], ss[step]) and np.array_equal(hp[step], sp[step])):
                return {"identical": False, "first_difference": [episode, step],
                        "max_abs_state_difference": float(np.max(np.abs(hs[step] - ss[step])))}
    return {"identical": True, "first_difference": None}


def measure_task(name: str, task_id: int, episodes: int, steps_arg: int, noop: bool, camera: bool):
    """Hard then soft resets of one task: (proof key, proof entry, result row, stack)."""
    load_builtin_entries()
    suite = SUITES.build(name)
    task = suite.task(task_id)
    episode_steps = suite.max_steps(task)
    steps = steps_arg or episode_steps
    actions = np.tile(NOOP, (steps, 1)) if noop else fixed_actions(steps)
    hard = run_episodes(suite, task_id, episodes, steps, actions, soft=False, camera=camera)
    soft = run_episodes(suite, task_id, episodes, steps, actions, soft=True, camera=camera)
    verdict = compare(hard["trajectories"], soft["trajectories"])
    hard_reset = float(np.median(hard["reset_s"][1:] or hard["reset_s"]))
    soft_reset = float(np.median(soft["reset_s"][1:])) if episodes > 1 else None
    step = float(np.median(hard["step_s"])) if hard["step_s"] else 0.0
    entry = {**verdict, "soft_episodes": soft["kinds"].count("soft"), "steps": steps,
             "whole_episodes": steps >= episode_steps,  # shorter replays are recorded, not trusted
             "episodes": episodes, "actions": "noop" if noop else "fixed_sweep"}
    row = {**entry, "task": task.name, "hard_reset_s": hard_reset, "soft_reset_s": soft_reset,
           "step_s": step, "camera": "third_person 256 px" if camera else None, "first_reset_s": hard["reset_s"][0]}
    if camera:  # an episode's share only with the camera an evaluation renders
        row |= {"reset_share_of_episode_hard": hard_reset / (hard_reset + episode_steps * step) if step else None,
                "reset_share_of_episode_soft": (soft_reset / (soft_reset + episode_steps * step)
                                                if step and soft_reset is not None else None)}
    row |= {"protocol_steps": episode_steps, "reset_kinds_soft_run": soft["kinds"]}
    return reset_key(name, task.name), entry, row, reset_stack(suite._assets_identity)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", default="libero_spatial")
    parser.add_argument("--tasks", default=None, help="task ids; default: all tasks of each suite")
    parser.add_argument("--episodes", type=int, default=3, help="episodes per task (soft resets from the 2nd)")
    parser.add_argument("--steps", type=int, default=20, help="steps per episode; 0: the protocol's max")
    parser.add_argument("--noop", action="store_true", help="no-op actions instead of the fixed arm sweep")
    parser.add_argument("--jobs", type=int, default=1, help="tasks measured at once (processes)")
    parser.add_argument("--no-camera", action="store_true",
                        help="render nothing: the trajectory proof only (timings then exclude the camera)")
    parser.add_argument("--write-proof", action="store_true", help=f"merge verdicts into {RESET_PROOF_FILE}")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_builtin_entries()
    out = {"command": vars(args) | {"out": str(args.out)}, "load_average_before": os.getloadavg(), "tasks": {}}
    work = []
    for name in args.suites.split(","):
        suite = SUITES.build(name)
        work += [(name, t) for t in parse_ids(args.tasks) or [t.task_id for t in suite.tasks()]]
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        fixed = (args.episodes, args.steps, args.noop, not args.no_camera)
        done = list(pool.map(measure_task, *zip(*work), *([a] * len(work) for a in fixed)))
    entries, stack = {}, None
    for (name, task_id), (key, entry, row, task_stack) in zip(work, done):
        stack = stack or task_stack
        entries[key] = entry
        out["tasks"][f"{name}/{task_id}"] = row
        print(json.dumps({f"{name}/{task_id}": {k: v for k, v in row.items() if k != "task"}}))
    out["stack"] = stack
    out["load_average_after"] = os.getloadavg()
    if args.write_proof:
        proof = ResetProof.load().merged(stack, entries)
        RESET_PROOF_FILE.write_text(json.dumps(proof.to_json(), indent=1, sort_keys=True) + "\n")
        out["proof_identity"] = proof.identity
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
