"""Demonstration collection: roll out the privileged scripted oracle in a suite from its fixed initial
states, keep the successful episodes, and write them in LIBERO's HDF5 layout (models/training/demos.py).

Diversity (DART): with `action_noise` > 0 the executed arm action is the oracle's plus Gaussian noise,
while the recorded action is the oracle's clean one; the closed-loop oracle then corrects from states
a clean rollout never visits, which is what a behaviour-cloned policy needs to learn to recover.

Resumable: one file per task; every attempted initial state is recorded in it, so a re-run skips
finished tasks and attempts and goes on where it stopped.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.policy import Observation, PolicyNeeds
from lamp_bench.harness.registry import POLICIES, SUITES, load_builtin_entries
from lamp_bench.harness.suite import Episode, SuiteEnv
from lamp_bench.models.training.demos import DEMO_SUFFIX, DemoWriter, Frame, TaskInfo


def _simulator_extras(env: SuiteEnv) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Flattened MuJoCo state, arm joint positions and every body's world pose (pos + quat xyzw),
    from a MuJoCo-backed suite environment (LIBERO's `sim_env`); None where the suite has no such thing."""
    sim_env = getattr(env, "sim_env", None)
    sim = getattr(sim_env, "sim", None)
    if sim is None:
        return None, None, None
    state = sim.get_state().flatten()
    robots = getattr(sim_env, "robots", None)
    joints = np.asarray(robots[0]._joint_positions) if robots else None
    quat_wxyz = np.asarray(sim.data.xquat)
    poses = np.concatenate([np.asarray(sim.data.xpos), quat_wxyz[:, 1:], quat_wxyz[:, :1]], axis=1)
    return state, joints, poses


def _frame(obs: Observation, action: np.ndarray, env: SuiteEnv, object_names: list[str]) -> Frame:
    state, joints, body_poses = _simulator_extras(env)
    objects = obs.privileged.get("objects", {})
    object_poses = np.array([np.concatenate([objects[n]["pos"], objects[n]["quat"]]) for n in object_names]) \
        if object_names else None
    return Frame(action=np.asarray(action, dtype=np.float64), images=obs.images, proprio=obs.proprio,
                 state=state, joints=joints, depth=obs.depth, segmentation=obs.segmentation,
                 intrinsics=obs.intrinsics, extrinsics=obs.extrinsics, body_poses=body_poses, object_poses=object_poses)


def _names(obs: Observation) -> tuple[list[str] | None, list[str]]:
    seg = obs.privileged.get("segmentation_names")  # id -> name; LIBERO's ids are 0..n-1, ManiSkill's skip some
    body_names = [str(seg.get(b, "")) for b in range(max(seg) + 1)] if seg else None
    return body_names, sorted(obs.privileged.get("objects", {}))


def collect_demos(
    suite: str,
    tasks: Sequence[int] | None,
    episodes_per_task: int,
    out_dir: str | Path,
    assets: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    cameras: Sequence[str] = ("third_person", "wrist"),
    image_size: int = 128,
    action_noise: float = 0.0,
    init_states: Sequence[int] | None = None,
    suite_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Collect `episodes_per_task` successful oracle demonstrations per task into
    `out_dir/<suite>/<task>_demo.hdf5`, trying the task's initial states in order (all of them, or
    `init_states`, e.g. to keep some for held-out evaluation); returns a summary per task. `suite_kwargs`
    go to the suite (e.g. render = "fast", for models that are trained and evaluated under it)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    load_builtin_entries()
    SUITES.check(suite)
    if episodes_per_task < 1:
        raise ConfigError(f"--episodes-per-task must be >= 1; got {episodes_per_task}")
    suite_obj = SUITES.build(suite, **dict(suite_kwargs or {}), **({"assets": str(assets)} if assets is not None else {}))
    task_list = suite_obj.tasks() if tasks is None else [suite_obj.task(t) for t in tasks]
    oracle = POLICIES.build("oracle")
    needs = PolicyNeeds(cameras=tuple(cameras), image_size=image_size, depth=True, segmentation=True,
                        proprio=True, privileged=True)
    folder = Path(out_dir) / suite
    writers = {
        task.task_id: DemoWriter(folder / f"{task.name}{DEMO_SUFFIX}",
                                 TaskInfo(suite, task.task_id, task.name, task.instruction, task.dataset or suite,
                                          str(task.extra.get("bddl", ""))),
                                 tuple(cameras), image_size)
        for task in task_list
    }
    rng = np.random.default_rng(seed)
    summary: dict[str, Any] = {"suite": suite, "out_dir": str(folder), "tasks": [], "action_noise": action_noise}
    started = time.perf_counter()
    env = None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        total = bar.add_task("demonstrations", total=episodes_per_task * len(task_list))
        try:
            for task in task_list:
                writer = writers[task.task_id]
                done = writer.successes()
                attempted = writer.attempted()
                bar.advance(total, min(done, episodes_per_task))
                entry = {"task_id": task.task_id, "task": task.name, "file": str(writer.path),
                         "attempts": len(attempted), "new_attempts": 0}
                available = range(suite_obj.num_init_states(task))
                for init in available if init_states is None else [i for i in init_states if i in available]:
                    if done >= episodes_per_task:
                        break
                    if init in attempted:
                        continue
                    env = env or suite_obj.make_env(needs)
                    bar.update(total, description=f"task {task.task_id}, init state {init}")
                    success, frames, body_names, object_names = _rollout(
                        env, oracle, suite_obj, task, Episode(suite, task.task_id, init, seed), rng, action_noise)
                    writer.add(init, seed, success, frames, body_names, object_names)
                    entry["attempts"] += 1
                    entry["new_attempts"] += 1
                    if success:
                        done += 1
                        bar.advance(total)
                entry["demos"] = done
                entry["steps"] = writer.total_steps()
                entry["short_by"] = max(0, episodes_per_task - done)
                summary["tasks"].append(entry)
        finally:
            if env is not None:
                env.close()
    summary["demos"] = sum(t["demos"] for t in summary["tasks"])
    summary["steps"] = sum(t["steps"] for t in summary["tasks"])
    summary["wall_time_s"] = round(time.perf_counter() - started, 1)
    return summary


def _rollout(env: SuiteEnv, oracle, suite, task, episode: Episode, rng: np.random.Generator,
             action_noise: float) -> tuple[bool, list[Frame], list[str] | None, list[str]]:
    obs = env.reset(episode)
    oracle.reset([task], [episode.seed])
    body_names, object_names = _names(obs)
    frames: list[Frame] = []
    for _ in range(suite.max_steps(task)):
        action = oracle.act([obs])[0]
        frames.append(_frame(obs, action, env, object_names))
        executed = np.array(action, dtype=np.float64)
        if action_noise > 0:
            executed[:6] = np.clip(executed[:6] + rng.normal(0.0, action_noise, 6), -1.0, 1.0)
        result = env.step(executed)
        obs = result.observation
        if result.success:
            return True, frames, body_names, object_names
        if result.done:
            break
    return False, frames, body_names, object_names
