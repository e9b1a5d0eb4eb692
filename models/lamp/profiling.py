"""Per-component latency of one policy step (`lamp-bench profile`).

Clock: with one CPU thread (the default of benchmarks/profile_policies.py) every operation runs on
the calling thread, so its CPU time (`time.thread_time`) measures the computation itself and is
immune to other processes taking the cores (on the shared 2-core machine, wall-clock components
varied 2x between repeats; CPU time within a few percent). Otherwise (several threads, or a GPU,
synchronised before each reading) the wall clock is used. The result says which.

Components are timed by forward hooks on the policy's modules, exclusively (a component nested in
another, such as the bridges inside the LLM's prefill, is not counted twice), so they add up to the
step's total; "other" is the rest (tokenisation, batching, unnormalising). Each figure is the median
over `repeats` steps, after `warmup` steps. The `no-motion` ablation of the same preset is measured
in the same call, its steps interleaved with the policy's so that machine load affects both alike.

Actions are un-normalised with the statistics of `dataset` (a key of the checkpoint's statistics) when
one is named, else left in the model's normalised units: a checkpoint may hold many datasets' statistics
(OpenVLA-7B about 27) and the step's cost does not depend on which.
"""
from __future__ import annotations

import os
import statistics
import time
from collections import defaultdict
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.policy import Observation, Task
from lamp_bench.harness.registry import POLICIES, load_builtin_entries
from lamp_bench.models.lamp.policies import CAMERA, NORMALIZED_ACTIONS, LaMPPolicy

BASELINE = "no-motion"
COMPONENTS = ("vision", "depth", "lift", "flow_network", "cross_attention", "prefill", "decode")


class ComponentTimer:
    """Exclusive time per component name, from pre/post forward hooks on modules."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.totals: dict[str, float] = defaultdict(float)
        self._stack: list[list] = []  # [name, start, time spent in nested components]
        self._handles: list = []

    def attach(self, module: nn.Module | None, name: str | None = None) -> None:
        """Time `module` as `name`; name None: decided per call (the LLM: prefill or decode)."""
        if module is None:
            return

        def pre(_module, args, kwargs):
            label = name or ("prefill" if kwargs.get("inputs_embeds") is not None else "decode")
            self._stack.append([label, self.clock(), 0.0])

        def post(_module, args, kwargs, output):
            label, start, nested = self._stack.pop()
            elapsed = self.clock() - start
            self.totals[label] += elapsed - nested
            if self._stack:
                self._stack[-1][2] += elapsed

        self._handles += [module.register_forward_pre_hook(pre, with_kwargs=True),
                          module.register_forward_hook(post, with_kwargs=True)]

    def reset(self) -> None:
        self.totals.clear()

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()


def instrument(policy: LaMPPolicy, clock: Callable[[], float] = time.perf_counter) -> ComponentTimer:
    timer = ComponentTimer(clock)
    model = policy.model
    timer.attach(model.vision_backbone, "vision")
    timer.attach(model.projector, "vision")
    timer.attach(policy.depth_estimator, "depth")
    timer.attach(getattr(model, "lifter", None), "lift")
    if model.motion_expert is not None:
        me = model.motion_expert
        for module in (me, me.feature_proj, me.position, me.text_proj):
            timer.attach(module, "flow_network")
        for bridge in model.bridges.values():
            for module in (bridge, bridge.attn.k_proj, bridge.attn.v_proj):  # per token / once per step
                timer.attach(module, "cross_attention")
    timer.attach(model.language_model)  # prefill or decode
    return timer


def fake_observations(policy: LaMPPolicy, batch: int, seed: int = 0) -> list[Observation]:
    """Random images, depth and hand position with a plausible pinhole camera (content does not change timing)."""
    rng = np.random.default_rng(seed)
    s = policy.needs.image_size
    k = np.array([[s, 0.0, (s - 1) / 2], [0.0, s, (s - 1) / 2], [0.0, 0.0, 1.0]], dtype=np.float32)
    return [
        Observation(
            instruction="put the black bowl in the top drawer of the wooden cabinet",
            images={CAMERA: rng.integers(0, 256, (s, s, 3), dtype=np.uint8)},
            depth={CAMERA: rng.uniform(0.5, 2.0, (s, s)).astype(np.float32)},
            intrinsics={CAMERA: k},
            proprio=np.r_[rng.uniform(-0.3, 0.3, 3), 1.0, 0.0, 0.0, 0.0, 0.04, -0.04].astype(np.float32),
        )
        for _ in range(batch)
    ]


def _step_ms(policy: LaMPPolicy, timer: ComponentTimer, observations: list[Observation]) -> dict[str, float]:
    timer.reset()
    start = timer.clock()
    policy.act(observations)
    total = timer.clock() - start
    out = {c: 1000 * timer.totals.get(c, 0.0) for c in COMPONENTS}
    out["other"] = 1000 * total - sum(out.values())
    out["total"] = 1000 * total
    return out


def _synchronized_wall_clock(device: torch.device) -> Callable[[], float]:
    """Wall clock that first waits for queued accelerator work (kernels run asynchronously)."""
    if device.type != "cuda":
        return time.perf_counter

    def clock() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()

    return clock


def profiling_tasks(policy: LaMPPolicy, dataset: str | None, batch: int) -> list[Task]:
    """`batch` tasks whose actions are un-normalised with `dataset`'s statistics (None: not at all)."""
    if dataset is not None and dataset not in policy.statistics:
        raise ConfigError(f"--dataset {dataset!r}: the policy has no statistics for it; it has "
                          f"{sorted(policy.statistics)}")
    return [Task("profile", 0, "profile", "profile", dataset=dataset or NORMALIZED_ACTIONS)] * batch


def _medians(samples: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(s[k] for s in samples), 3) for k in samples[0]}


def profile_policy(
    name: str,
    preset: str = "small",
    batch: int = 1,
    repeats: int = 10,
    checkpoint: str | None = None,
    warmup: int = 2,
    device: str = "cpu",
    threads: int | None = None,
    dataset: str | None = None,
) -> dict[str, Any]:
    """Median per-component latency (ms) of `name`'s policy step and its ratio to `no-motion`.
    Without a checkpoint the models are randomly initialised at the preset's size (depth
    estimators included), which times the same computation as trained weights. `threads` sets
    torch's CPU threads (on a shared machine one thread is far steadier than several). `dataset`: the
    statistics key actions are un-normalised with (None: actions stay normalised)."""
    if threads is not None:
        torch.set_num_threads(threads)
    load_builtin_entries()
    names = [name] if name == BASELINE else [name, BASELINE]
    build = lambda n: POLICIES.build(n, checkpoint=checkpoint, preset=preset, device=device, random_depth=True)
    policies = [build(names[0])]
    tasks = profiling_tasks(policies[0], dataset, batch)  # before the baseline loads the checkpoint again
    policies += [build(n) for n in names[1:]]
    samples: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    single_thread = torch.get_num_threads() == 1 and torch.device(device).type == "cpu"
    clock = time.thread_time if single_thread else _synchronized_wall_clock(torch.device(device))
    timers = [instrument(p, clock) for p in policies]
    observations = fake_observations(policies[0], batch)
    for i in range(warmup + repeats):
        for n, policy, timer in zip(names, policies, timers):
            policy.reset(tasks, list(range(batch)))
            with torch.inference_mode():
                step = _step_ms(policy, timer, observations)
            if i >= warmup:
                samples[n].append(step)
    for timer in timers:
        timer.detach()
    result = _medians(samples[name])
    baseline = _medians(samples[BASELINE])
    description = policies[0].describe()["policy_config"]
    return {
        "policy": name,
        "preset": preset,
        "batch": batch,
        "repeats": repeats,
        "device": device,
        "threads": torch.get_num_threads(),
        "clock": "thread_cpu_time" if single_thread else "wall",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "checkpoint_hash": policies[0].checkpoint_hash,
        "dataset": dataset,  # None: actions left in normalised units
        "parameters": description["parameters"],
        "euler_steps": description["euler_steps"],
        "depth_source": description["depth_source"],
        "components_ms": {k: v for k, v in result.items() if k != "total"},
        "total_ms": result["total"],
        "motion_pathway_ms": round(sum(result[k] for k in ("depth", "lift", "flow_network", "cross_attention")), 3),
        "baseline": {"policy": BASELINE, "total_ms": baseline["total"],
                     "components_ms": {k: v for k, v in baseline.items() if k != "total"}},
        "ratio_to_no_motion": round(result["total"] / baseline["total"], 4),
    }
