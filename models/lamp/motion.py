"""The motion expert: a flow-matching transformer over lifted patch points that predicts scene flow.

Each of the N points is a token: projected patch feature + 3D Fourier positional encoding + the
embedded flow state x_t + the flow-time embedding. One extra token in front carries the instruction:
the mean of its token embeddings from the LLM's own (frozen) embedding table, projected. That needs
no second text encoder, and the embedding table is what the action expert reads the instruction
with, so both experts see the same lexical representation.

Inference (LaMP's "partial denoising"): k Euler steps from x_0 ~ N(0, sigma^2 I); with k = 1,
phi = x_0 + v(x_0, 0, c). The hidden states H of the last network evaluation (after the final
norm, (B, N, d)) are the motion prior the action expert cross-attends to.
Training (OT-CFM): x_t = (1 - t) x_0 + t x_1, loss || v(x_t, t, c) - (x_1 - x_0) ||^2.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lamp_bench.models.lamp.config import MotionConfig


class FourierPositions(nn.Module):
    """(B, N, 3) metres -> (B, N, d): sin/cos at pi * 2^k rad/m (wavelengths 2 m down to 2^(2-F) m)."""

    def __init__(self, n_freqs: int, dim: int):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(n_freqs), persistent=False)
        self.proj = nn.Linear(3 + 6 * n_freqs, dim)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        angles = (points[..., None] * self.freqs).flatten(-2)  # (B, N, 3F)
        return self.proj(torch.cat([points, angles.sin(), angles.cos()], dim=-1))


class TimeEmbedding(nn.Module):
    """Flow time t in [0, 1] -> (B, d) via sinusoids and an MLP (as in diffusion transformers)."""

    def __init__(self, dim: int, n_freqs: int = 64):
        super().__init__()
        self.register_buffer("freqs", torch.exp(-math.log(1000.0) * torch.arange(n_freqs) / n_freqs), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * n_freqs, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = 1000.0 * t[:, None] * self.freqs  # (B, F)
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))


class MotionExpert(nn.Module):
    def __init__(self, cfg: MotionConfig, vision_dim: int, text_dim: int):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.feature_proj = nn.Linear(vision_dim, d)
        self.position = FourierPositions(cfg.pos_freqs, d)
        self.flow_in = nn.Linear(3, d)
        self.time = TimeEmbedding(d)
        self.text_proj = nn.Linear(text_dim, d)
        layer = nn.TransformerEncoderLayer(
            d, cfg.num_heads, int(cfg.mlp_ratio * d), dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 3)

    def context(self, features: torch.Tensor, points: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The conditioning c, computed once per observation.
        features (B, N, Dv), points (B, N, 3), text (B, Dt) -> point tokens (B, N, d), text token (B, 1, d)."""
        return self.feature_proj(features) + self.position(points), self.text_proj(text)[:, None]

    def velocity(self, x: torch.Tensor, t: torch.Tensor, c: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, N, 3) flow state, t (B,) -> velocity (B, N, 3), hidden states H (B, N, d)."""
        point_tokens, text_token = c
        tokens = point_tokens + self.flow_in(x) + self.time(t)[:, None]
        h = self.blocks(torch.cat([text_token, tokens], dim=1))[:, 1:]
        h = self.norm(h)
        return self.head(h), h

    def forward(self, c: tuple[torch.Tensor, torch.Tensor], x0: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Euler integration from noise x0 (B, N, 3) (already sigma-scaled) over `steps` steps
        -> flow phi (B, N, 3) in metres, motion prior H (B, N, d) of the last evaluation."""
        x = x0
        for i in range(steps):
            t = torch.full((x.shape[0],), i / steps, device=x.device, dtype=x.dtype)
            v, h = self.velocity(x, t, c)
            x = x + v / steps
        return x / self.cfg.flow_scale, h

    def loss(self, c: tuple[torch.Tensor, torch.Tensor], flow: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """OT-CFM loss for target scene flow (B, N, 3) in metres."""
        x1 = flow * self.cfg.flow_scale
        x0 = self.cfg.sigma * torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        t = torch.rand(x1.shape[0], generator=generator, device=x1.device, dtype=x1.dtype)
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * x1
        v, _ = self.velocity(xt, t, c)
        return F.mse_loss(v, x1 - x0)
