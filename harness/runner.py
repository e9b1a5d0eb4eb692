"""The episode runner: K environments stepped in lockstep, one batched policy call per step.

A finished episode frees its slot for the next pending episode at once, so a batch never idles waiting
for the longest episode. Every episode keeps its own initial state and seed, so results do not depend
on K or on which slot an episode lands in.

Outcomes (results.record): the policy raising or returning a bad action ends the episode as a
policy_error; the environment failing ends it as an env_error after `env_retries` retries, each in a
fresh environment. A ConfigError (bad configuration, e.g. a wrong statistics key) stops the run at once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lamp_bench.harness.canaries import stack_provenance
from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.envs import EnvFailure, EnvHandle, InProcessEnv, SubprocessEnv
from lamp_bench.harness.motion_frames import compose_motion_frame
from lamp_bench.harness.policy import ACTION_DIM, Observation, Policy, PolicyNeeds, Task
from lamp_bench.harness.provenance import base_provenance
from lamp_bench.harness.suite import Episode, StepResult, Suite, SuiteSpec
from lamp_bench.harness.video import VideoWriter
from lamp_bench.results.record import (ENV_ERROR, FAILURE, POLICY_ERROR, SUCCESS, EpisodeFailure, EpisodeRecord,
                                       protocol_id)

ACTION_TOLERANCE = 1e-4  # actions are in [-1, 1]; beyond this they are a policy bug


@dataclass
class RunOptions:
    envs_per_worker: int = 1  # K environments per worker; K > 1 runs each in its own spawned process
    env_timeout_s: float = 300.0  # a step or reset slower than this counts as a hung environment
    env_retries: int = 2  # an env error is retried this many times, each in a fresh environment
    record_video: int = 0  # save the first K episodes (init states 0..K-1) of every task as video
    results_dir: Path | None = None  # where videos go
    # recorded videos also show the motion pathway's depth and predicted flow (harness/motion_frames.py)
    record_motion: bool = False


@dataclass
class Slot:
    """One environment and the episode it runs (none while free)."""

    index: int
    env: EnvHandle
    episode: Episode | None = None
    task: Task | None = None
    attempt: int = 1  # environments this episode has had, this one included
    observation: Observation | None = None
    started: float = 0.0
    steps: int = 0
    frames: list[np.ndarray] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def begin(self, episode: Episode, task: Task, attempt: int) -> None:
        self.episode, self.task, self.attempt = episode, task, attempt
        self.observation, self.started, self.steps, self.frames, self.info = None, time.perf_counter(), 0, None, {}

    def free(self) -> None:
        self.episode = self.task = self.observation = self.frames = None


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


def make_envs(suite: Suite, spec: SuiteSpec | None, needs: PolicyNeeds, count: int,
              options: RunOptions) -> list[EnvHandle]:
    if count <= 1:
        return [InProcessEnv(lambda: suite.make_env(needs))]
    if spec is None:
        raise ValueError("envs_per_worker > 1 runs environments in their own processes, which build the suite "
                         "from its SuiteSpec(name, kwargs): pass a SuiteSpec to run_episodes, not a Suite object")
    return [SubprocessEnv(spec, needs, timeout_s=options.env_timeout_s) for _ in range(count)]


class _Run:
    """The state of one `run_episodes` call: slots, pending episodes, and how episodes end."""

    def __init__(self, policy: Policy, suite: Suite, slots: list[Slot], episodes: Sequence[Episode],
                 on_record: Callable[[dict[str, Any]], None], label: str, options: RunOptions):
        self.policy, self.suite, self.slots, self.options = policy, suite, slots, options
        self.pending: list[tuple[Episode, int]] = [(e, 1) for e in reversed(episodes)]  # popped from the end
        self.on_record, self.label = on_record, label
        self.identity = policy.describe()
        self.provenance = {**base_provenance(), "suite": suite.provenance(), "stack": stack_provenance(suite.name)}
        self.protocol = protocol_id(suite.protocol_fields())
        self.videos = VideoWriter(options.results_dir) if options.record_video and options.results_dir else None
        self.records: list[dict[str, Any]] = []
        if options.record_motion and options.record_video:
            policy.keep_motion_diagnostics = True  # off otherwise: the default act does no extra work

    def busy(self) -> list[Slot]:
        return [s for s in self.slots if s.episode is not None]

    # -- ending episodes ---------------------------------------------------------------------------

    def finish(self, slot: Slot, status: str, reason: str | None) -> None:
        episode, task = slot.episode, slot.task
        success = status == SUCCESS
        info = {**task.extra, **slot.info}
        if slot.frames and self.videos is not None:
            info["video"] = self.videos.submit(self.label, episode.suite, episode.task_id, episode.init_index,
                                               episode.seed, success, slot.frames)
        record = EpisodeRecord(
            label=self.label, policy=self.identity["policy"], suite=episode.suite, task_id=episode.task_id,
            init_index=episode.init_index, seed=episode.seed, task_name=task.name, instruction=task.instruction,
            status=status, success=success, steps=slot.steps,
            wall_time_s=round(time.perf_counter() - slot.started, 3), failure_reason=reason,
            checkpoint_hash=self.identity.get("checkpoint_hash"),
            finished_at=datetime.now(timezone.utc).isoformat(), protocol=self.protocol, attempts=slot.attempt,
            policy_config=self.identity.get("policy_config", {}), info=info, provenance=self.provenance,
        ).to_json()
        self.on_record(record)
        self.records.append(record)
        slot.free()

    def fail(self, slot: Slot, failure: EpisodeFailure) -> None:
        """A policy error ends the episode; an env error restarts the environment and retries the episode."""
        if failure.outcome == ENV_ERROR:
            slot.env.restart()
            if slot.attempt <= self.options.env_retries:
                self.pending.append((slot.episode, slot.attempt + 1))  # next in line
                slot.free()
                return
            failure = EpisodeFailure(ENV_ERROR, f"{failure.reason} (after {slot.attempt} attempts, each in a "
                                                f"fresh environment)")
        self.finish(slot, failure.outcome, failure.reason)

    # -- starting episodes -------------------------------------------------------------------------

    def start(self, free: list[Slot]) -> None:
        """The next pending episode in each free slot; resets run concurrently across env processes."""
        while free and self.pending:
            batch = [(slot, *self.pending.pop()) for slot in free if self.pending]
            for slot, episode, attempt in batch:
                slot.begin(episode, self.suite.task(episode.task_id), attempt)
                slot.env.send_reset(episode)
            free = []
            for slot, episode, _ in batch:
                try:
                    slot.observation = slot.env.receive()
                except EnvFailure as failure:
                    self.fail(slot, EpisodeFailure(ENV_ERROR, f"environment reset failed: {failure}"))
                    free.append(slot)
                    continue
                if self.options.record_video and episode.init_index < self.options.record_video:
                    slot.frames = [self.video_frame(slot.observation)]
                try:
                    self.policy.reset([slot.task], [episode.seed], [slot.index])
                except ConfigError:
                    raise
                except Exception as error:
                    self.fail(slot, EpisodeFailure(POLICY_ERROR, f"policy reset failed: {type(error).__name__}: {error}"))
                    free.append(slot)

    # -- one lockstep step -------------------------------------------------------------------------

    def act(self, busy: list[Slot]) -> np.ndarray | None:
        """The batch's actions, or None after ending every busy episode as a policy error."""
        try:
            actions = np.asarray(self.policy.act([s.observation for s in busy], [s.index for s in busy]),
                                 dtype=np.float64)
            if actions.ndim == 0 or actions.shape[0] != len(busy):
                raise ValueError(f"policy returned {actions.shape[0] if actions.ndim else 0} actions for "
                                 f"{len(busy)} observations")
        except ConfigError:
            raise
        except Exception as error:
            for slot in busy:
                self.fail(slot, EpisodeFailure(POLICY_ERROR, f"policy failed: {type(error).__name__}: {error}"))
            return None
        if self.options.record_motion:
            self.show_motion(busy)
        return actions

    def video_frame(self, observation: Observation) -> np.ndarray:
        """The camera frame; with record_motion, widened by two (still empty) motion panels."""
        frame = _frame(observation)
        return compose_motion_frame(frame, None) if self.options.record_motion else frame

    def show_motion(self, busy: list[Slot]) -> None:
        """Redraw the frame each recording slot's policy just acted on with what its motion pathway saw."""
        recording = [s for s in busy if s.frames]
        if recording:
            kept = self.policy.motion_diagnostics([s.index for s in recording])
            for slot, diagnostics in zip(recording, kept, strict=True):
                slot.frames[-1] = compose_motion_frame(_frame(slot.observation), diagnostics)

    def step(self, busy: list[Slot], actions: np.ndarray) -> None:
        stepping = []
        for slot, action in zip(busy, actions):
            reason = invalid_action_reason(action)
            if reason:
                self.fail(slot, EpisodeFailure(POLICY_ERROR, reason))
            else:
                slot.env.send_step(action)
                stepping.append(slot)
        ended: list[tuple[Slot, bool]] = []
        for slot in stepping:
            try:
                result: StepResult = slot.env.receive()
            except EnvFailure as failure:
                self.fail(slot, EpisodeFailure(ENV_ERROR, f"environment step failed: {failure}"))
                continue
            slot.steps += 1
            slot.observation = result.observation
            slot.info.update(result.info)
            if slot.frames is not None:
                slot.frames.append(self.video_frame(result.observation))
            if result.success or result.done or slot.steps >= self.suite.max_steps(slot.task):
                ended.append((slot, result.success))
        for slot, _ in ended:
            slot.env.send_episode_info()
        for slot, success in ended:
            try:
                slot.info.update(slot.env.receive())
            except EnvFailure as failure:  # the outcome is known; only the extra metrics are lost
                slot.info["episode_info_error"] = str(failure)
            limit = self.suite.max_steps(slot.task)
            reason = None if success else (
                "episode ended by the suite" if slot.steps < limit else f"max steps ({limit}) reached")
            self.finish(slot, SUCCESS if success else FAILURE, reason)

    def close(self) -> None:
        for slot in self.slots:
            slot.env.close()
        if self.videos is not None:
            self.videos.close()


def run_episodes(
    policy: Policy,
    suite: Suite | SuiteSpec,
    episodes: Sequence[Episode],
    on_record: Callable[[dict[str, Any]], None],
    *,
    label: str | None = None,
    options: RunOptions | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    built: Suite | None = None,
) -> list[dict[str, Any]]:
    """Run `episodes` and hand each finished episode's record (EpisodeRecord as JSON) to `on_record`.

    `suite`: a SuiteSpec (needed for K > 1: every environment process builds the suite from it), or a
    Suite object for one in-process environment. When `should_stop()` turns true (preemption), no new
    episode starts; running ones finish. `built`: the suite the caller already built from the SuiteSpec
    (saves building it twice)."""
    options = options or RunOptions()
    spec = suite if isinstance(suite, SuiteSpec) else None
    if spec is not None:
        suite = built if built is not None else spec.build()
    if not episodes:
        return []
    needs = env_needs(policy.needs, options)
    envs = make_envs(suite, spec, needs, min(options.envs_per_worker, len(episodes)), options)
    run = _Run(policy, suite, [Slot(i, env) for i, env in enumerate(envs)], episodes, on_record,
               label or policy.name, options)
    try:
        run.start(run.slots)
        while busy := run.busy():
            actions = run.act(busy)
            if actions is not None:
                run.step(busy, actions)
            if not should_stop():
                run.start([s for s in run.slots if s.episode is None])
    finally:
        run.close()
    return run.records


def _frame(observation: Observation) -> np.ndarray:
    if "third_person" in observation.images:
        return observation.images["third_person"]
    if observation.images:
        return next(iter(observation.images.values()))
    raise ConfigError("video recording needs a rendered camera, and the suite returned none")
