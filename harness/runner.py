"""The episode runner: K environments stepped in lockstep, one batched policy call per step.

A finished episode frees its slot for the next pending episode at once, so a batch never idles waiting
for the longest episode. Every episode keeps its own initial state and seed, so results do not depend
on K or on which slot an episode lands in.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lamp_bench.harness.envs import EnvFailure, EnvHandle, InProcessEnv, SubprocessEnv
from lamp_bench.harness.policy import ACTION_DIM, Observation, Policy, PolicyNeeds, Task
from lamp_bench.harness.provenance import base_provenance
from lamp_bench.harness.suite import Episode, StepResult, Suite

ACTION_TOLERANCE = 1e-4  # actions are in [-1, 1]; beyond this they are a policy bug


@dataclass
class RunOptions:
    envs_per_worker: int = 1  # K environments per worker; K > 1 runs each in its own spawned process
    env_timeout_s: float = 300.0  # a step or reset slower than this counts as a hung environment
    record_video: int = 0  # save the first K episodes (init states 0..K-1) of every task as video
    results_dir: Path | None = None  # where videos go
    suite_name: str = ""  # registry name and kwargs, to rebuild the suite in env processes
    suite_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Running:
    episode: Episode
    task: Task
    observation: Observation
    started: float
    steps: int = 0
    frames: list[np.ndarray] | None = None
    info: dict[str, Any] = field(default_factory=dict)


def env_needs(policy_needs: PolicyNeeds, options: RunOptions) -> PolicyNeeds:
    """What the environments must render: the policy's needs, plus a camera when recording video."""
    if options.record_video and "third_person" not in policy_needs.cameras:
        return replace(policy_needs, cameras=policy_needs.cameras + ("third_person",))
    return policy_needs


def invalid_action_reason(action: np.ndarray) -> str | None:
    if action.shape != (ACTION_DIM,):
        return f"policy returned an action of shape {action.shape}, expected ({ACTION_DIM},)"
    if not np.all(np.isfinite(action)):
        return f"policy returned a non-finite action {np.array2string(action, precision=3)}"
    if np.any(np.abs(action) > 1 + ACTION_TOLERANCE):
        return f"policy returned an out-of-range action {np.array2string(action, precision=3)} (allowed [-1, 1])"
    return None


def make_envs(suite: Suite, needs: PolicyNeeds, count: int, options: RunOptions) -> list[EnvHandle]:
    if count <= 1:
        return [InProcessEnv(suite.make_env(needs))]
    if not options.suite_name:
        raise ValueError("envs_per_worker > 1 needs RunOptions.suite_name to rebuild the suite in env processes")
    return [SubprocessEnv(options.suite_name, options.suite_kwargs, needs, timeout_s=options.env_timeout_s)
            for _ in range(count)]


def run_episodes(
    policy: Policy,
    suite: Suite,
    episodes: Sequence[Episode],
    on_record: Callable[[dict[str, Any]], None],
    *,
    label: str | None = None,
    options: RunOptions | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[dict[str, Any]]:
    """Run `episodes` and hand each finished episode's record to `on_record` (the store writer).

    When `should_stop()` turns true (preemption), no new episode starts; running ones finish."""
    options = options or RunOptions()
    label = label or policy.name
    identity = policy.describe()
    provenance = {**base_provenance(), "suite": suite.provenance()}
    needs = env_needs(policy.needs, options)
    pending = list(episodes)[::-1]
    records: list[dict[str, Any]] = []
    if not pending:
        return records
    envs = make_envs(suite, needs, min(options.envs_per_worker, len(pending)), options)
    running: dict[int, _Running] = {}

    def finish(slot: int, run: _Running, success: bool, status: str, reason: str | None) -> None:
        record = {
            "label": label,
            "policy": identity["policy"],
            "suite": run.episode.suite,
            "task_id": run.episode.task_id,
            "init_index": run.episode.init_index,
            "seed": run.episode.seed,
            "task_name": run.task.name,
            "instruction": run.task.instruction,
            "status": status,
            "success": bool(success),
            "steps": run.steps,
            "wall_time_s": round(time.perf_counter() - run.started, 3),
            "failure_reason": reason,
            "checkpoint_hash": identity.get("checkpoint_hash"),
            "finished_at": datetime.now(timezone.utc).isoformat(),
            "policy_config": identity.get("policy_config", {}),
            "info": {**run.task.extra, **run.info},
            "provenance": provenance,
        }
        if run.frames:
            record["info"]["video"] = save_video(options.results_dir, record, run.frames)
        on_record(record)
        records.append(record)
        running.pop(slot, None)

    def start(slots: list[int]) -> None:
        """Start the next pending episode in each slot; resets run concurrently across env processes."""
        while slots and pending:
            batch = [(slot, pending.pop()) for slot in slots if pending]
            for slot, episode in batch:
                envs[slot].send_reset(episode)
            retry = []
            for slot, episode in batch:
                task = suite.task(episode.task_id)
                run = _Running(episode, task, Observation(task.instruction), time.perf_counter())
                try:
                    run.observation = envs[slot].receive()
                except EnvFailure as failure:
                    finish(slot, run, False, "error", f"environment reset failed: {failure}")
                    retry.append(slot)
                    continue
                if options.record_video and episode.init_index < options.record_video:
                    run.frames = [_frame(run.observation)]
                try:
                    policy.reset([task], [episode.seed], [slot])
                except Exception as error:
                    finish(slot, run, False, "error", f"policy reset failed: {type(error).__name__}: {error}")
                    retry.append(slot)
                    continue
                running[slot] = run
            slots = retry

    start(list(range(len(envs))))
    try:
        while running:
            slots = sorted(running)
            try:
                actions = np.asarray(policy.act([running[s].observation for s in slots], slots), dtype=np.float64)
                if actions.shape[0] != len(slots):
                    raise ValueError(f"policy returned {actions.shape[0]} actions for {len(slots)} observations")
            except Exception as error:
                for slot in slots:
                    finish(slot, running[slot], False, "error", f"policy failed: {type(error).__name__}: {error}")
                start([] if should_stop() else slots)
                continue
            stepped = []
            for slot, action in zip(slots, actions):
                reason = invalid_action_reason(action)
                if reason:
                    finish(slot, running[slot], False, "error", reason)
                    continue
                envs[slot].send_step(action)
                stepped.append(slot)
            freed = [s for s in slots if s not in stepped]
            done_slots = []
            for slot in stepped:
                run = running[slot]
                try:
                    result: StepResult = envs[slot].receive()
                except EnvFailure as failure:
                    finish(slot, run, False, "error", f"environment step failed: {failure}")
                    freed.append(slot)
                    continue
                run.steps += 1
                run.observation = result.observation
                run.info.update(result.info)
                if run.frames is not None:
                    run.frames.append(_frame(result.observation))
                limit = suite.max_steps(run.task)
                if result.success or result.done or run.steps >= limit:
                    done_slots.append((slot, result.success))
            for slot, _ in done_slots:
                envs[slot].send_episode_info()
            for slot, success in done_slots:
                run = running[slot]
                try:
                    run.info.update(envs[slot].receive())
                except EnvFailure as failure:
                    run.info["episode_info_error"] = str(failure)
                reason = None if success else (
                    "episode ended by the suite" if run.steps < suite.max_steps(run.task)
                    else f"max steps ({suite.max_steps(run.task)}) reached")
                finish(slot, run, success, "success" if success else "failure", reason)
                freed.append(slot)
            if freed and not should_stop():
                start(sorted(freed))
    finally:
        for env in envs:
            env.close()
    return records


def _frame(observation: Observation) -> np.ndarray:
    if "third_person" in observation.images:
        return observation.images["third_person"]
    if observation.images:
        return next(iter(observation.images.values()))
    raise EnvFailure("video recording needs a rendered camera, and the suite returned none")


def save_video(results_dir: Path | None, record: dict[str, Any], frames: list[np.ndarray]) -> str | None:
    """mp4 through imageio's ffmpeg plugin, GIF when no encoder is available; path relative to results dir."""
    if results_dir is None:
        return None
    import imageio.v2 as imageio

    outcome = "success" if record["success"] else "failure"
    folder = Path(results_dir) / "videos" / record["label"] / record["suite"]
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"task{record['task_id']}_init{record['init_index']}_seed{record['seed']}_{outcome}"
    try:
        path = folder / f"{stem}.mp4"
        imageio.mimwrite(path, frames, fps=20, macro_block_size=1)
    except Exception:  # no ffmpeg encoder in this environment
        path = folder / f"{stem}.gif"
        imageio.mimwrite(path, frames, duration=0.05)
    return str(path.relative_to(results_dir))
