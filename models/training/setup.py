"""A training run's setup: the model (fresh from a preset, or from `init_checkpoint`, in the policy variant's
architecture), the demonstration dataset with its scene-flow labels, the stages to run, the depth estimator;
all built and checked before the first step (`prepare` -> `Run`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lamp_bench.harness.config import ConfigError
from lamp_bench.models.lamp.action_tokenizer import ActionStats
from lamp_bench.models.lamp.checkpoint import load_checkpoint
from lamp_bench.models.lamp.config import BYTE_VOCAB, LaMPConfig
from lamp_bench.models.lamp.config import preset as preset_config
from lamp_bench.models.lamp.model import LaMP, build_model
from lamp_bench.models.lamp.text_tokenizer import byte_level_tokenizer
from lamp_bench.models.training.config import TrainConfig, validate
from lamp_bench.models.training.dataset import (
    DemoDataset,
    SampleSpec,
    action_statistics,
    default_cache_dir,
    open_demo_files,
)


@dataclass
class Run:
    """Everything a training run needs, built and checked before the first step."""

    config: TrainConfig
    model: LaMP
    tokenizer: Any
    dataset: DemoDataset
    statistics: dict[str, ActionStats]
    stages: list[str]
    device: torch.device
    depth_estimator: torch.nn.Module | None
    use_lora: bool


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _model_config(config: TrainConfig, base: LaMPConfig, from_checkpoint: bool) -> LaMPConfig:
    from lamp_bench.models.lamp.policies import VARIANTS

    return VARIANTS[config.policy].config(base, from_checkpoint=from_checkpoint)


def prepare(config: TrainConfig, saved_model_config: dict[str, Any] | None = None) -> Run:
    validate(config)
    device = _device(config.device)
    if config.init_checkpoint is not None:
        ckpt = load_checkpoint(config.init_checkpoint, merge_lora=False)
        cfg = _model_config(config, ckpt.config, from_checkpoint=True)
        if config.proprio is not None and config.proprio != cfg.proprio:
            raise ConfigError(f"proprio = {config.proprio} differs from the init checkpoint's architecture "
                              f"(proprio = {cfg.proprio}); leave it unset when starting from a checkpoint")
        model, tokenizer = ckpt.model, ckpt.tokenizer
    else:
        cfg = _model_config(config, preset_config(config.preset), from_checkpoint=False)
        if config.proprio is not None:
            cfg = cfg.replace(proprio=config.proprio)
        if cfg.llm.vocab_size != BYTE_VOCAB:
            raise ConfigError(f"preset {config.preset!r} needs a real tokenizer and weights: pass init_checkpoint "
                              "(a converted OpenVLA checkpoint) instead of training it from scratch")
        model, tokenizer = None, byte_level_tokenizer()
    stages = {"1": ["1"], "2": ["2"], "both": ["1", "2"]}[config.stage]
    if cfg.motion is None:
        if config.stage == "1":
            raise ConfigError(f"policy {config.policy!r} has no motion expert: stage 1 has nothing to train")
        stages = ["2"]
    stages = [s for s in stages if getattr(config, f"stage{s}_steps") > 0]
    if not stages:
        raise ConfigError("no training steps: set stage1_steps / stage2_steps")
    depth_estimator = None  # built first: missing weights are an error before labels are computed
    if cfg.motion is not None and cfg.motion.depth.source != "sim":
        from lamp_bench.models.lamp.depth import build_depth_estimator

        depth_estimator = build_depth_estimator(cfg.motion.depth).to(device).eval().requires_grad_(False)
    infos = open_demo_files(config.data)
    spec = SampleSpec(cfg.vision.image_size, cfg.vision.patch_size, motion=cfg.motion is not None,
                      proprio=cfg.proprio, flow_source=config.flow_source, flow_horizon=config.flow_horizon,
                      dense_flow=config.augment_shift > 0)
    statistics = action_statistics(infos)
    cache = Path(config.flow_cache) if config.flow_cache else default_cache_dir()
    dataset = DemoDataset(infos, spec, statistics, cache, progress=_label_progress if config.progress else None)
    if len(dataset) == 0:
        raise ConfigError("the demonstration files hold no steps")
    if saved_model_config is not None:
        cfg = LaMPConfig.from_dict(saved_model_config)  # resuming: exactly the model that was built
    elif model is None and cfg.motion is not None:
        scale = config.flow_scale or _auto_flow_scale(dataset.flow_q99())
        cfg = cfg.replace(motion=dataclasses.replace(cfg.motion, flow_scale=scale))
    if model is None or saved_model_config is not None:
        torch.manual_seed(config.seed)
        model = build_model(cfg)
    else:
        model.cfg = cfg  # the variant's inference settings (steps) on the checkpoint's weights
    use_lora = config.lora if config.lora is not None else config.init_checkpoint is not None
    return Run(config, model.to(device), tokenizer, dataset, statistics, stages, device, depth_estimator, use_lora)


def _auto_flow_scale(q99: float) -> float:
    """Scale bringing moving points' flow (mm per step) to about 1, the scale of sigma = 0.5 noise, instead of
    letting the noise swamp it; most points are static (zero flow), so the 99th percentile of the
    magnitudes measures the moving ones. Two significant digits."""
    if q99 <= 0:
        return 1.0
    return float(f"{1.0 / q99:.2g}")


def _label_progress(total: int):
    from rich.progress import Progress

    progress = Progress(transient=True)
    progress.start()
    task = progress.add_task("scene-flow labels", total=total)
    count = [0]

    def tick() -> None:
        progress.advance(task)
        count[0] += 1
        if count[0] >= total:
            progress.stop()

    return tick
