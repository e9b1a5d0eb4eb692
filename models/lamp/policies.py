"""The LaMP policy family behind harness.policy.Policy. Variants differ by configuration only:

    lamp        the checkpoint as trained (motion pathway on, its gating and depth source)
    openvla     the action expert alone (a checkpoint without a motion expert)
    no-motion   LaMP with the motion pathway switched off (0 Euler steps; bridges idle)
    ungated     a checkpoint trained with ungated cross-attention
    steps-K     K Euler steps of the motion expert at inference (K = 1, 5, 10)
    midas, zoedepth, dav2   a checkpoint trained with that monocular depth estimator
    sim-depth   the simulator's true depth instead of the checkpoint's estimator (diagnostic)

The checkpoint's config is authoritative for the architecture: a variant that contradicts it is an
error, not a silent reinterpretation. Without a checkpoint, a randomly initialised model of the preset
with the variant's settings is built (profiling, the "untrained" baseline); its actions are in the
normalised units (identity statistics).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.policy import Observation, Policy, PolicyNeeds, Task, slot_indices
from lamp_bench.harness.registry import register_policy
from lamp_bench.models.lamp.action_tokenizer import GRIPPER_CANONICAL, PROPRIO_DIM, ActionStats, proprio_features
from lamp_bench.models.lamp.checkpoint import load_checkpoint, validate_checkpoint
from lamp_bench.models.lamp.config import LaMPConfig, preset as preset_config
from lamp_bench.models.lamp.model import build_model, count_parameters
from lamp_bench.models.lamp.text_tokenizer import byte_level_tokenizer, instruction_ids, prompt_ids

CAMERA = "third_person"
# A Task.dataset asking for actions in the model's normalised units (nothing un-normalised): profiling a
# checkpoint without naming one of its datasets. Not a key any statistics file can hold (angle brackets).
NORMALIZED_ACTIONS = "<normalized>"


@dataclass(frozen=True)
class Variant:
    name: str
    motion: bool = True  # run the motion pathway
    motion_free_checkpoint: bool = False  # the checkpoint must have no motion expert (openvla)
    steps: int | None = None  # Euler steps override
    gated: bool | None = None  # required gating of the checkpoint's bridges
    depth: str | None = None  # required depth source of the checkpoint
    depth_override: bool = False  # replace the checkpoint's depth source by `depth` (sim-depth)

    def config(self, cfg: LaMPConfig, from_checkpoint: bool) -> LaMPConfig:
        """The config to run: the checkpoint's (checked against this variant) or the preset's
        (changed to this variant)."""
        if self.motion_free_checkpoint:
            if cfg.motion is None:
                return cfg
            if from_checkpoint:
                raise ConfigError(f"policy {self.name!r} is the action expert alone, but this checkpoint has a "
                                  "motion expert: use policy 'no-motion' to switch its motion pathway off")
            return cfg.replace(motion=None, bridge=None)
        if not self.motion:
            return cfg
        if cfg.motion is None:
            raise ConfigError(f"policy {self.name!r} needs a motion expert, but this checkpoint has none "
                              "(use policy 'openvla' or 'no-motion')")
        motion, bridge = cfg.motion, cfg.bridge
        if self.gated is not None and bridge.gated != self.gated:
            if from_checkpoint:
                kind = "gated" if bridge.gated else "ungated"
                raise ConfigError(f"policy {self.name!r} needs a checkpoint with {'gated' if self.gated else 'ungated'} "
                                  f"cross-attention; this one is {kind} (use policy 'lamp' to run it as trained)")
            bridge = replace(bridge, gated=self.gated)
        if self.depth is not None and motion.depth.source != self.depth:
            if from_checkpoint and not self.depth_override:
                raise ConfigError(f"policy {self.name!r} needs a checkpoint trained with {self.depth!r} depth; this one "
                                  f"uses {motion.depth.source!r} (use policy 'lamp' for the checkpoint's own, or "
                                  "'sim-depth' for the simulator's)")
            motion = replace(motion, depth=replace(motion.depth, source=self.depth))
        if self.steps is not None:
            motion = replace(motion, steps=self.steps)
        return cfg.replace(motion=motion, bridge=bridge)


VARIANTS = {v.name: v for v in [
    Variant("lamp"),
    Variant("openvla", motion=False, motion_free_checkpoint=True),
    Variant("no-motion", motion=False),
    Variant("ungated", gated=False),
    Variant("steps-1", steps=1),
    Variant("steps-5", steps=5),
    Variant("steps-10", steps=10),
    Variant("midas", depth="midas"),
    Variant("zoedepth", depth="zoedepth"),
    Variant("dav2", depth="dav2"),
    Variant("sim-depth", depth="sim", depth_override=True),
]}


def check_checkpoint(policy: str, checkpoint: str | Path) -> None:
    """Refuse, before anything starts, a checkpoint folder that policy `policy` cannot load or run: a
    bad folder of either kind (lamp-bench's, or OpenVLA's HF layout), or one this variant contradicts.
    Reads headers only. Policies outside the LaMP family check their own checkpoints."""
    variant = VARIANTS.get(policy)
    if variant is not None:
        variant.config(validate_checkpoint(checkpoint), from_checkpoint=True)


def identity_statistics() -> dict[str, ActionStats]:
    """For an untrained model: decoded actions are used as they are (canonical units), and so is the
    proprioception."""
    ones = np.ones(7)
    return {"untrained": ActionStats(-ones, ones, ones.astype(bool), GRIPPER_CANONICAL,
                                     -np.ones(PROPRIO_DIM), np.ones(PROPRIO_DIM))}


class LaMPPolicy(Policy):
    def __init__(
        self,
        variant: Variant,
        checkpoint: str | None = None,
        preset: str = "tiny",
        device: str = "cpu",
        label: str | None = None,
        depth_weights: str | None = None,
        random_depth: bool = False,
    ):
        self.name = variant.name
        self.variant = variant
        self.label = label or variant.name
        self.device = torch.device(device)
        if checkpoint is not None:
            ckpt = load_checkpoint(checkpoint, device=self.device)
            cfg = variant.config(ckpt.config, from_checkpoint=True)
            self.model, self.tokenizer, self.statistics = ckpt.model, ckpt.tokenizer, ckpt.statistics
            self.checkpoint, self.checkpoint_hash = str(ckpt.path), ckpt.sha256
        else:
            cfg = variant.config(preset_config(preset), from_checkpoint=False)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # the untrained baseline is the same model in every run
                self.model = build_model(cfg).to(self.device).eval()
            self.tokenizer, self.statistics = byte_level_tokenizer(), identity_statistics()
            self.checkpoint = self.checkpoint_hash = None
        # The model keeps its trained config; `cfg` adds this variant's inference settings.
        self.cfg = cfg
        self.use_motion = variant.motion and cfg.motion is not None
        self.depth_source = cfg.motion.depth.source if self.use_motion else None
        self.depth_estimator = None
        if self.use_motion and self.depth_source != "sim":
            from lamp_bench.models.lamp.depth import build_depth_estimator

            self.depth_estimator = build_depth_estimator(
                cfg.motion.depth, weights=depth_weights, random_init=random_depth
            ).to(self.device).eval()
        # Every camera comes with its intrinsics (for lifting); only simulator depth needs the depth map.
        self.needs = PolicyNeeds(cameras=(CAMERA,), image_size=cfg.vision.image_size,
                                 depth=self.use_motion and self.depth_source == "sim", proprio=cfg.proprio)
        self._tasks: dict[int, Task] = {}
        self._stats: dict[int, ActionStats] = {}
        self._noise: dict[int, torch.Generator] = {}
        self._token_cache: dict[str, tuple[list[int], list[int]]] = {}
        self._diagnostics: dict[int, dict[str, np.ndarray] | None] = {}  # slot -> last act's (when kept)

    # --- Policy -----------------------------------------------------------------------------
    def reset(self, tasks: Sequence[Task], seeds: Sequence[int], slots: Sequence[int] | None = None) -> None:
        if len(tasks) != len(seeds):
            raise ValueError(f"{len(tasks)} tasks for {len(seeds)} seeds")
        for slot, task, seed in zip(slot_indices(len(tasks), slots), tasks, seeds):
            self._tasks[slot] = task
            self._stats[slot] = self._statistics_for(task)
            self._noise[slot] = torch.Generator().manual_seed(int(seed))
            self._diagnostics.pop(slot, None)

    @torch.inference_mode()
    def act(self, observations: Sequence[Observation], slots: Sequence[int] | None = None) -> np.ndarray:
        index = slot_indices(len(observations), slots)
        missing = [s for s in index if s not in self._tasks]
        if missing:
            raise RuntimeError(f"act() on slots {missing} before reset() started an episode there")
        images = self._images(observations)
        tokens = [self._tokens(o.instruction) for o in observations]
        points = x0 = depth = intrinsics = None
        if self.use_motion:
            depth, intrinsics = self._depth(observations, images), self._intrinsics(observations)
            points = self.model.lift(depth, intrinsics)
            x0 = torch.stack([self.cfg.motion.sigma * torch.randn((self.cfg.vision.num_patches, 3),
                                                                 generator=self._noise[s]) for s in index])
            x0 = x0.to(self.device)
        ids, flow = self.model.predict_action_ids(
            images, [t[0] for t in tokens], [t[1] for t in tokens], points, x0,
            self.cfg.motion.steps if self.use_motion else None,
            self._proprio(observations, index) if self.cfg.proprio else None,
        )
        if self.keep_motion_diagnostics:
            kept = motion_diagnostics(depth, intrinsics, points, flow) if self.use_motion else [None] * len(index)
            self._diagnostics.update(zip(index, kept))
        normalized = self.model.action_tokenizer.decode(ids)  # (B, 7)
        return np.stack([self._stats[s].to_canonical(normalized[i]) for i, s in enumerate(index)])

    def motion_diagnostics(self, slots: Sequence[int]) -> list[dict[str, np.ndarray] | None]:
        return [self._diagnostics.get(s) for s in slots]

    def describe(self) -> dict[str, Any]:
        return {
            "policy": self.name,
            "policy_config": {
                "label": self.label,
                "checkpoint": self.checkpoint,
                "motion_pathway": self.use_motion,
                "depth_source": self.depth_source,
                "depth_estimator": self.depth_estimator.describe() if self.depth_estimator is not None else None,
                "euler_steps": self.cfg.motion.steps if self.use_motion else 0,
                "parameters": count_parameters(self.model),
                "model": self.cfg.to_dict(),
            },
            "checkpoint_hash": self.checkpoint_hash,
        }

    # --- inputs -----------------------------------------------------------------------------
    def _statistics_for(self, task: Task) -> ActionStats:
        if task.dataset == NORMALIZED_ACTIONS:
            return identity_statistics()["untrained"]
        if task.dataset in self.statistics:
            return self.statistics[task.dataset]
        if len(self.statistics) == 1:
            return next(iter(self.statistics.values()))
        raise ConfigError(
            f"task {task.name!r} asks for action statistics {task.dataset!r}, which the checkpoint does not have; "
            f"it has {sorted(self.statistics)}"
        )

    def _tokens(self, instruction: str) -> tuple[list[int], list[int]]:
        if instruction not in self._token_cache:
            self._token_cache[instruction] = (
                prompt_ids(self.tokenizer, self.cfg.llm, instruction), instruction_ids(self.tokenizer, instruction)
            )
        return self._token_cache[instruction]

    def _images(self, observations: Sequence[Observation]) -> torch.Tensor:
        size = self.cfg.vision.image_size
        batch = []
        for o in observations:
            image = o.images.get(CAMERA)
            if image is None or image.shape != (size, size, 3):
                got = None if image is None else image.shape
                raise ValueError(f"policy {self.name!r} needs a {CAMERA!r} image of shape ({size}, {size}, 3); got {got}")
            batch.append(image)
        # np.stack copies into one writable array (suite images may be read-only views).
        return torch.from_numpy(np.stack(batch)).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)

    def _proprio(self, observations: Sequence[Observation], slots: Sequence[int]) -> torch.Tensor:
        if any(o.proprio is None for o in observations):
            raise ValueError(f"policy {self.name!r} has a proprioception token and needs proprio in every observation")
        rows = [self._stats[s].normalize_proprio(proprio_features(o.proprio)) for o, s in zip(observations, slots)]
        return torch.from_numpy(np.stack(rows)).to(self.device)

    def _intrinsics(self, observations: Sequence[Observation]) -> torch.Tensor:
        if any(CAMERA not in o.intrinsics for o in observations):
            raise ValueError(f"policy {self.name!r} lifts patches to 3D and needs {CAMERA!r} intrinsics in every "
                             "observation (every suite camera delivers them)")
        return torch.from_numpy(np.stack([o.intrinsics[CAMERA] for o in observations])).float().to(self.device)

    def _depth(self, observations: Sequence[Observation], images: torch.Tensor) -> torch.Tensor:
        """(B, S, S) metres: the simulator's, or the estimator's (run at its own lower resolution)."""
        if self.depth_estimator is None:
            if any(CAMERA not in o.depth for o in observations):
                raise ValueError(f"policy {self.name!r} uses simulator depth and needs {CAMERA!r} depth in every observation")
            return torch.from_numpy(np.stack([o.depth[CAMERA] for o in observations])).float().to(self.device)
        return self.depth_estimator(images)  # resizes to its own input size and back


def motion_diagnostics(depth: torch.Tensor, intrinsics: torch.Tensor, points: torch.Tensor,
                       flow: torch.Tensor) -> list[dict[str, np.ndarray]]:
    """Per batch row: the depth map the pathway lifted, and its points' pixel positions before and after
    the predicted flow (camera frame, so projecting with the same intrinsics puts them on the image)."""
    def project(p: torch.Tensor) -> np.ndarray:  # (B, Np, 3) camera frame -> (B, Np, 2) pixels, NaN behind
        pixels = p.float() @ intrinsics.float().transpose(1, 2)
        z = pixels[..., 2:]
        return torch.where(z > 1e-6, pixels[..., :2] / z.clamp(min=1e-6), torch.nan).cpu().numpy()

    kept = {"depth": depth.float().cpu().numpy(), "uv": project(points), "uv_flowed": project(points + flow),
            "points": points.float().cpu().numpy(), "flow": flow.float().cpu().numpy()}
    return [{key: value[i] for key, value in kept.items()} for i in range(len(depth))]


def _register(variant: Variant) -> None:
    def factory(checkpoint: str | None = None, preset: str = "tiny", device: str = "cpu", label: str | None = None,
                depth_weights: str | None = None, random_depth: bool = False) -> LaMPPolicy:
        """depth_weights: folder of the depth estimator's weights (default: see models.depth);
        random_depth: a randomly initialised estimator of the real size (profiling only)."""
        return LaMPPolicy(variant, checkpoint=checkpoint, preset=preset, device=device, label=label,
                          depth_weights=depth_weights, random_depth=random_depth)

    register_policy(variant.name)(factory)


for _variant in VARIANTS.values():
    _register(_variant)
