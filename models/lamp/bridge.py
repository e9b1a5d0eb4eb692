"""Gated cross-attention from the action expert's hidden states to the motion prior.

    Z' = Z + sigmoid(Linear_g(Z)) * CrossAttn(Z, H, H)      (ungated ablation: Z' = Z + CrossAttn)

applied to the output of chosen Llama decoder layers through forward hooks (they survive peft's
get_peft_model and merge_and_unload, and keep the LLM's state-dict keys). Queries and the gate read
an RMS-normalised Z, as Flamingo's gated cross-attention does, because Llama's residual stream grows
in scale with depth. The output projection starts at zero, so an untrained bridge is the identity.
Keys and values of H are computed once per policy step (`set_context`) and reused by every decoded
token; cross-attention is position-wise in Z, so prefill + cached decoding equals a full forward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lamp_bench.models.lamp.config import BridgeConfig


class CrossAttention(nn.Module):
    def __init__(self, dim: int, context_dim: int, num_heads: int, head_dim: int):
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads, self.head_dim = num_heads, head_dim
        self.q_proj = nn.Linear(dim, inner, bias=False)
        self.k_proj = nn.Linear(context_dim, inner, bias=False)
        self.v_proj = nn.Linear(context_dim, inner, bias=False)
        self.o_proj = nn.Linear(inner, dim, bias=False)
        nn.init.zeros_(self.o_proj.weight)

    def keys_values(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """H (B, N, Dh) -> keys, values (B, heads, N, head_dim)."""
        split = lambda x: x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)  # noqa: E731
        return split(self.k_proj(h)), split(self.v_proj(h))

    def forward(self, z: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """z (B, L, D), kv from keys_values -> (B, L, D)"""
        b, n, _ = z.shape
        q = self.q_proj(z).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, heads, L, hd)
        out = F.scaled_dot_product_attention(q, kv[0].to(q.dtype), kv[1].to(q.dtype))
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


class MotionBridge(nn.Module):
    """One bridge, attached to one decoder layer."""

    def __init__(self, cfg: BridgeConfig, dim: int, context_dim: int, eps: float):
        super().__init__()
        self.norm = nn.RMSNorm(dim, eps=eps)
        self.attn = CrossAttention(dim, context_dim, cfg.num_heads, cfg.head_dim)
        self.gate = nn.Linear(dim, 1) if cfg.gated else None
        self.kv: tuple[torch.Tensor, torch.Tensor] | None = None  # set per policy step

    def set_context(self, h: torch.Tensor | None) -> None:
        self.kv = None if h is None else self.attn.keys_values(h)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, L, D) decoder-layer output -> Z' (B, L, D)"""
        zn = self.norm(z)
        update = self.attn(zn, self.kv)
        if self.gate is not None:
            update = torch.sigmoid(self.gate(zn)) * update
        return z + update

    def hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        """Forward hook on a decoder layer (transformers 5 layers return a tensor). No context (motion
        pathway off): leave the layer's output alone."""
        return None if self.kv is None else self(output)
