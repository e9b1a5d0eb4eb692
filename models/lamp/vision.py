"""OpenVLA's fused vision backbone (DINOv2 + SigLIP patch features) and its MLP projector.

Module names follow the HF OpenVLA checkpoint (`vision_backbone.featurizer`,
`vision_backbone.fused_featurizer`, `projector.fc1/fc2/fc3`); the towers are transformers models
(timm cannot be installed here), so loading OpenVLA's timm-named weights needs a key mapping.

Pixel normalisation per tower is data, not architecture: a checkpoint's `preprocessor_config.json`
sets it (OpenVLA's processor applies `tvf_normalize_params`: ImageNet's mean/std rounded to bfloat16 for
DINOv2, 0.5/0.5 for SigLIP; the checkpoint was trained with those values). Without one, the defaults
below (exact ImageNet, SigLIP's 0.5) apply.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel, SiglipVisionConfig, SiglipVisionModel

from lamp_bench.models.lamp.config import VisionConfig, ViTConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ImageNormalization:
    """Per-channel (x - mean) / std of images in [0, 1], one pair per tower."""

    dino_mean: tuple[float, float, float] = IMAGENET_MEAN
    dino_std: tuple[float, float, float] = IMAGENET_STD
    siglip_mean: tuple[float, float, float] = SIGLIP_MEAN
    siglip_std: tuple[float, float, float] = SIGLIP_STD

    @classmethod
    def from_preprocessor_config(cls, data: Any) -> "ImageNormalization":
        """From a preprocessor_config.json's content: OpenVLA's `tvf_normalize_params` (what its
        processor applies), else its `means` / `stds` ([DINOv2, SigLIP] each). ValueError says what is wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"expected an object, got {type(data).__name__}")
        if "tvf_normalize_params" in data:
            params = data["tvf_normalize_params"]
            if not isinstance(params, list) or not all(isinstance(p, dict) for p in params):
                raise ValueError("tvf_normalize_params must be a list of {mean, std} objects")
            means, stds, where = [p.get("mean") for p in params], [p.get("std") for p in params], "tvf_normalize_params"
        elif "means" in data and "stds" in data:
            means, stds, where = data["means"], data["stds"], "means/stds"
        else:
            raise ValueError("has neither tvf_normalize_params nor means and stds (one [DINOv2, SigLIP] pair each)")
        if not isinstance(means, list) or not isinstance(stds, list) or len(means) != 2 or len(stds) != 2:
            raise ValueError(f"{where}: expected two entries, [DINOv2, SigLIP] (the fused backbone's towers)")
        (dino_mean, siglip_mean), (dino_std, siglip_std) = [[_channels(v, where) for v in pair] for pair in (means, stds)]
        if min(dino_std + siglip_std) <= 0:
            raise ValueError(f"{where}: every std must be positive, got {[dino_std, siglip_std]}")
        return cls(dino_mean, dino_std, siglip_mean, siglip_std)

    def to_preprocessor_config(self) -> dict[str, Any]:
        """What lamp-bench writes into a checkpoint's preprocessor_config.json (read back above)."""
        return {"image_processor_type": "lamp-bench", "means": [list(self.dino_mean), list(self.siglip_mean)],
                "stds": [list(self.dino_std), list(self.siglip_std)]}


def _channels(value: Any, where: str) -> tuple[float, float, float]:
    if (not isinstance(value, list) or len(value) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"{where}: expected three numbers per tower (RGB), got {value!r}")
    return tuple(float(v) for v in value)


def _dino(cfg: ViTConfig, vision: VisionConfig) -> Dinov2WithRegistersModel:
    if cfg.intermediate_size % cfg.hidden_size:
        raise ValueError("DINOv2 needs intermediate_size to be a multiple of hidden_size (mlp_ratio)")
    model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers - 1,  # features come from the second-to-last block
        num_attention_heads=cfg.num_heads,
        mlp_ratio=cfg.intermediate_size // cfg.hidden_size,
        num_register_tokens=cfg.num_register_tokens,
        image_size=vision.image_size,
        patch_size=vision.patch_size,
    ))
    model.layernorm = nn.Identity()  # the final norm only applies after the last block
    return model


def _siglip(cfg: ViTConfig, vision: VisionConfig) -> SiglipVisionModel:
    model = SiglipVisionModel(SiglipVisionConfig(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers - 1,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        image_size=vision.image_size,
        patch_size=vision.patch_size,
        vision_use_head=False,
        hidden_act="gelu",  # OpenVLA's timm SigLIP tower uses exact GELU, not transformers' tanh default
    ))
    model.post_layernorm = nn.Identity()
    return model


class VisionBackbone(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.featurizer = _dino(cfg.dino, cfg)
        self.fused_featurizer = _siglip(cfg.siglip, cfg)
        self.n_prefix = 1 + cfg.dino.num_register_tokens  # DINOv2's CLS + registers precede the patches
        self.set_normalization(ImageNormalization())

    def set_normalization(self, normalization: ImageNormalization) -> None:
        """The pixel statistics images are normalised with (not weights: kept out of the state dict)."""
        self.normalization = normalization
        device = self.dino_mean.device if hasattr(self, "dino_mean") else None
        for name in ("dino_mean", "dino_std", "siglip_mean", "siglip_std"):
            value = torch.tensor(getattr(normalization, name), device=device).view(1, 3, 1, 1)
            self.register_buffer(name, value, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) in [0, 1] -> patch features (B, Np, D_dino + D_siglip)."""
        dino_in = (images - self.dino_mean) / self.dino_std
        siglip_in = (images - self.siglip_mean) / self.siglip_std
        dino = self.featurizer.encoder(self.featurizer.embeddings(dino_in)).last_hidden_state  # (B, P+Np, Dd)
        siglip = self.fused_featurizer.encoder(self.fused_featurizer.embeddings(siglip_in)).last_hidden_state  # (B, Np, Ds)
        return torch.cat([dino[:, self.n_prefix:], siglip], dim=-1)


class Projector(nn.Module):
    """OpenVLA's projector for a fused backbone: fc1 -> GELU -> fc2 -> GELU -> fc3."""

    def __init__(self, vision_dim: int, llm_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
        self.fc3 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, Np, Dv) -> (B, Np, D_llm)"""
        return self.fc3(self.act(self.fc2(self.act(self.fc1(features)))))
