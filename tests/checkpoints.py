"""Tiny real checkpoints for tests that need checkpoint folders a policy would accept (sweep files are
checked at load time, headers only)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from lamp_bench.models.lamp.checkpoint import save_checkpoint
from lamp_bench.models.lamp.config import LaMPConfig, preset
from lamp_bench.models.lamp.model import build_model
from lamp_bench.models.lamp.policies import identity_statistics
from lamp_bench.models.lamp.text_tokenizer import byte_level_tokenizer


def paper_configs() -> dict[str, LaMPConfig]:
    """The checkpoint folders sweeps/paper.toml names, each with what its labels require."""
    tiny = preset("tiny")
    depth = lambda source: tiny.replace(motion=replace(tiny.motion, depth=replace(tiny.motion.depth, source=source)))
    return {"lamp": depth("dav2"), "openvla": tiny.replace(motion=None, bridge=None),
            "ungated": depth("dav2").replace(bridge=replace(tiny.bridge, gated=False)),
            "midas": depth("midas"), "zoedepth": depth("zoedepth")}


def write_checkpoints(root: Path, configs: dict[str, LaMPConfig]) -> Path:
    for name, cfg in configs.items():
        torch.manual_seed(0)
        save_checkpoint(build_model(cfg), root / name, byte_level_tokenizer(), identity_statistics())
    return root
