"""OpenVLA's fused vision backbone (DINOv2 + SigLIP patch features) and its MLP projector.

Module names follow the HF OpenVLA checkpoint (`vision_backbone.featurizer`,
`vision_backbone.fused_featurizer`, `projector.fc1/fc2/fc3`); the towers are transformers models
(timm cannot be installed here), so loading OpenVLA's timm-named weights needs a key mapping.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel, SiglipVisionConfig, SiglipVisionModel

from lamp_bench.models.config import VisionConfig, ViTConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


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
        for name, value in [("dino_mean", IMAGENET_MEAN), ("dino_std", IMAGENET_STD),
                            ("siglip_mean", SIGLIP_MEAN), ("siglip_std", SIGLIP_STD)]:
            self.register_buffer(name, torch.tensor(value).view(1, 3, 1, 1), persistent=False)

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
