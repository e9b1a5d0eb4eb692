"""The LaMP model: an OpenVLA-style action expert (vision backbone -> projector -> Llama -> 7 action
tokens) with an optional motion expert whose hidden states reach the LLM through cross-attention
bridges. One code path for every preset; `cfg.motion is None` is the action expert alone.

Sequence layout (one row per batch element; prompts differ in length):
    [BOS] [Np patch embeddings] ([proprio]) [pad ...] [prompt tokens after BOS] (+ [7 action ids] [EOS] in training)
The proprioception token is there only when `cfg.proprio` (not in OpenVLA or the paper).
Padding sits between the patches and the text, so every row ends at the same position (action
tokens line up across the batch) and no query row is fully masked; positions skip the padding.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from lamp_bench.models.lamp.action_tokenizer import PROPRIO_DIM, ActionTokenizer
from lamp_bench.models.lamp.bridge import MotionBridge
from lamp_bench.models.lamp.config import LaMPConfig, LLMConfig
from lamp_bench.models.lamp.lifting import PointLifter
from lamp_bench.models.lamp.motion import MotionExpert
from lamp_bench.models.lamp.vision import Projector, VisionBackbone



def build_llm(cfg: LLMConfig) -> LlamaForCausalLM:
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads or cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id,
        pad_token_id=cfg.pad_token_id,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    ))


class ProprioProjector(nn.Module):
    """OpenVLA-OFT's proprioception projector: fc1 -> GELU -> fc2, (B, PROPRIO_DIM) -> (B, D_llm)."""

    def __init__(self, llm_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(PROPRIO_DIM, llm_dim)
        self.fc2 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(proprio)))


@dataclass
class Batch:
    """A training batch. Token ids are per-row lists (prompts differ in length).

    Either `points` or `depth` + `intrinsics` feed the motion expert (ignored without one)."""

    images: torch.Tensor  # (B, 3, S, S) float in [0, 1]
    prompt_ids: list[list[int]]  # text_tokenizer.prompt_ids: BOS + prompt
    instruction_ids: list[list[int]]  # text_tokenizer.instruction_ids
    actions: torch.Tensor  # (B, 7) normalised to [-1, 1] (ActionStats.normalize)
    proprio: torch.Tensor | None = None  # (B, PROPRIO_DIM) ActionStats.normalize_proprio; models with cfg.proprio
    points: torch.Tensor | None = None  # (B, Np, 3) patch-centre points, camera frame, metres
    depth: torch.Tensor | None = None  # (B, h, w) metres
    intrinsics: torch.Tensor | None = None  # (B, 3, 3) for the S x S image
    flow: torch.Tensor | None = None  # (B, Np, 3) scene-flow target of each point, metres


class LaMP(nn.Module):
    def __init__(self, cfg: LaMPConfig):
        super().__init__()
        self.cfg = cfg
        self.action_tokenizer = ActionTokenizer(cfg.action.vocab_end, cfg.action.n_bins)
        self.vision_backbone = VisionBackbone(cfg.vision)
        self.projector = Projector(cfg.vision.feature_dim, cfg.llm.hidden_size)
        self.proprio_projector = ProprioProjector(cfg.llm.hidden_size) if cfg.proprio else None
        self.language_model: LlamaForCausalLM | PeftModel = build_llm(cfg.llm)
        self.motion_expert = None
        self.bridges = None
        if cfg.motion is not None:
            self.lifter = PointLifter(cfg.vision.image_size, cfg.vision.patch_size)
            self.motion_expert = MotionExpert(cfg.motion, cfg.vision.feature_dim, cfg.llm.hidden_size)
            self.bridges = nn.ModuleDict({
                str(i): MotionBridge(cfg.bridge, cfg.llm.hidden_size, cfg.motion.hidden_size, cfg.llm.rms_norm_eps)
                for i in cfg.bridge.layers
            })
            layers = self.llm.model.layers
            for i, bridge in self.bridges.items():
                layers[int(i)].register_forward_hook(bridge.hook, prepend=True)

    # --- parts ------------------------------------------------------------------------------
    @property
    def llm(self) -> LlamaForCausalLM:
        """The Llama model itself, whether or not LoRA wraps it."""
        lm = self.language_model
        return lm.get_base_model() if isinstance(lm, PeftModel) else lm

    def embed_instructions(self, instruction_ids: list[list[int]]) -> torch.Tensor:
        """Mean of each instruction's token embeddings from the LLM's table -> (B, D_llm)."""
        ids, mask = _pad_right(instruction_ids, self.cfg.llm.pad_token_id, self.device)
        emb = self.llm.get_input_embeddings()(ids)  # (B, T, D)
        return (emb * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)

    def motion_prior(
        self,
        features: torch.Tensor,
        points: torch.Tensor,
        instruction_ids: list[list[int]],
        x0: torch.Tensor,
        steps: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, Np, Dv), points (B, Np, 3), noise x0 (B, Np, 3) -> flow (B, Np, 3), H (B, Np, d)."""
        c = self.motion_expert.context(features, points, self.embed_instructions(instruction_ids))
        return self.motion_expert(c, x0, steps)

    @contextlib.contextmanager
    def motion_context(self, h: torch.Tensor | None) -> Iterator[None]:
        """Bridges attend to H (B, N, d) inside the block (keys/values computed once, here); with
        None, or without bridges, the LLM runs unchanged."""
        bridges = list(self.bridges.values()) if self.bridges is not None else []
        for bridge in bridges:
            bridge.set_context(h)
        try:
            yield
        finally:
            for bridge in bridges:
                bridge.set_context(None)

    def visual_tokens(self, features: torch.Tensor, proprio: torch.Tensor | None) -> torch.Tensor:
        """features (B, Np, Dv), proprio (B, PROPRIO_DIM) -> (B, Np (+1), D) LLM embeddings before the text."""
        patches = self.projector(features)
        if self.proprio_projector is None:
            return patches
        if proprio is None:
            raise ValueError("this model has a proprioception token (cfg.proprio): pass the normalised proprioception")
        return torch.cat([patches, self.proprio_projector(proprio.to(patches.dtype))[:, None]], dim=1)

    def multimodal_inputs(self, patch_embeds: torch.Tensor, token_ids: list[list[int]]):
        """patch_embeds (B, Np (+1), D) visual_tokens, token_ids rows starting with BOS
        -> inputs_embeds (B, L, D), attention_mask (B, L), position_ids (B, L); see the module doc."""
        bos = torch.tensor([row[0] for row in token_ids], device=self.device)[:, None]
        text, text_mask = _pad_left([row[1:] for row in token_ids], self.cfg.llm.pad_token_id, self.device)
        emb = self.llm.get_input_embeddings()(torch.cat([bos, text], dim=1))  # (B, 1 + T, D)
        inputs = torch.cat([emb[:, :1], patch_embeds.to(emb.dtype), emb[:, 1:]], dim=1)
        mask = torch.cat([torch.ones(inputs.shape[0], 1 + patch_embeds.shape[1], dtype=torch.long, device=self.device),
                          text_mask], dim=1)
        return inputs, mask, (mask.cumsum(-1) - 1).clamp(min=0)

    @property
    def device(self) -> torch.device:
        return self.projector.fc1.weight.device

    def lift(self, depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
        return self.lifter(depth, intrinsics)

    def sample_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """x0 ~ N(0, sigma^2 I) of shape (B, Np, 3)."""
        shape = (batch, self.cfg.vision.num_patches, 3)
        return self.cfg.motion.sigma * torch.randn(shape, generator=generator, device=self.device)

    # --- training ---------------------------------------------------------------------------
    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Teacher-forced action-token cross-entropy (7 action ids + EOS, as OpenVLA), and the
        flow-matching loss where the batch has flow targets. The trainer combines them
        (L = action_loss + lambda_FM * fm_loss)."""
        features = self.vision_backbone(batch.images)
        out: dict[str, torch.Tensor] = {}
        h = None
        if self.motion_expert is not None:
            if batch.points is None and (batch.depth is None or batch.intrinsics is None):
                raise ValueError("a model with a motion expert needs batch.points, or batch.depth and batch.intrinsics")
            points = batch.points if batch.points is not None else self.lift(batch.depth, batch.intrinsics)
            c = self.motion_expert.context(features, points, self.embed_instructions(batch.instruction_ids))
            _, h = self.motion_expert(c, self.sample_noise(len(batch.prompt_ids)), self.cfg.motion.steps)
            if batch.flow is not None:
                out["fm_loss"] = self.motion_expert.loss(c, batch.flow)
        action_ids = self.action_tokenizer.encode(batch.actions.detach().cpu().numpy())
        targets = torch.cat([torch.as_tensor(action_ids, device=self.device),
                             torch.full((len(action_ids), 1), self.cfg.llm.eos_token_id, device=self.device)], dim=1)
        rows = [p + t for p, t in zip(batch.prompt_ids, targets.tolist(), strict=True)]
        inputs, mask, positions = self.multimodal_inputs(self.visual_tokens(features, batch.proprio), rows)
        n = targets.shape[1]
        with self.motion_context(h):
            logits = self.language_model(
                inputs_embeds=inputs, attention_mask=mask, position_ids=positions, logits_to_keep=n + 1
            ).logits[:, :-1]  # (B, 8, V): predictions of the 7 action ids and EOS
        out["action_loss"] = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        out["action_logits"] = logits[:, : self.cfg.action.dim]
        return out

    # --- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def generate_actions(self, patch_embeds: torch.Tensor, prompt_ids: list[list[int]]) -> torch.Tensor:
        """Greedy decoding constrained to the action ids, with a KV cache -> (B, 7) action token ids.
        Runs inside `motion_context` when the motion prior is on."""
        first, end = self.action_tokenizer.first_id, self.action_tokenizer.vocab_end
        inputs, mask, positions = self.multimodal_inputs(patch_embeds, prompt_ids)
        out = self.language_model(inputs_embeds=inputs, attention_mask=mask, position_ids=positions,
                                  use_cache=True, logits_to_keep=1)
        chosen = []
        for step in range(self.cfg.action.dim):
            token = first + out.logits[:, -1, first:end].argmax(-1)  # (B,)
            chosen.append(token)
            if step + 1 == self.cfg.action.dim:
                break
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            positions = positions[:, -1:] + 1
            out = self.language_model(input_ids=token[:, None], attention_mask=mask, position_ids=positions,
                                      cache=out.cache, use_cache=True)
        return torch.stack(chosen, dim=1)

    @torch.no_grad()
    def predict_action_ids(
        self,
        images: torch.Tensor,
        prompt_ids: list[list[int]],
        instruction_ids: list[list[int]] | None = None,
        points: torch.Tensor | None = None,
        x0: torch.Tensor | None = None,
        steps: int | None = None,
        proprio: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """images (B, 3, S, S) in [0, 1] -> action ids (B, 7), flow (B, Np, 3) or None.
        The motion pathway runs when `points` is given (with instruction ids and noise x0); `proprio`
        (B, PROPRIO_DIM) is for models with a proprioception token."""
        features = self.vision_backbone(images)
        flow = h = None
        if points is not None:
            flow, h = self.motion_prior(features, points, instruction_ids, x0, steps or self.cfg.motion.steps)
        with self.motion_context(h):
            return self.generate_actions(self.visual_tokens(features, proprio), prompt_ids), flow

    # --- fine-tuning and weights ------------------------------------------------------------
    def add_lora(self) -> None:
        """Wrap the LLM with LoRA adapters (config.lora). peft freezes the LLM's base weights only;
        what else trains is the trainer's choice (see parameter_groups)."""
        if isinstance(self.language_model, PeftModel):
            return
        lora = self.cfg.lora
        self.language_model = get_peft_model(self.language_model, LoraConfig(
            r=lora.rank, lora_alpha=lora.alpha, lora_dropout=0.0, target_modules=list(lora.targets)
        ))

    def merge_lora(self) -> None:
        """Fold the adapters into the base weights for inference (hooks stay attached)."""
        if isinstance(self.language_model, PeftModel):
            self.language_model = self.language_model.merge_and_unload()

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """lora / motion (motion expert) / bridge / backbone (vision, projector, LLM base weights)."""
        groups: dict[str, list[nn.Parameter]] = {"lora": [], "motion": [], "bridge": [], "backbone": []}
        for name, p in self.named_parameters():
            key = ("lora" if "lora_" in name else "motion" if name.startswith("motion_expert.")
                   else "bridge" if name.startswith("bridges.") else "backbone")
            groups[key].append(p)
        return groups

    def base_state_dict(self) -> dict[str, torch.Tensor]:
        """All non-LoRA weights under their canonical names (as without peft, e.g.
        `language_model.model.layers.0.self_attn.q_proj.weight`): what model.safetensors holds and
        what an external loader (OpenVLA weights) maps onto."""
        return {canonical_key(k): v for k, v in self.state_dict().items() if "lora_" not in k}

    def load_base_state_dict(self, state: dict[str, torch.Tensor], assign: bool = False) -> None:
        """Load canonical-named non-LoRA weights; every key must match in name and shape."""
        actual = {canonical_key(k): k for k in self.state_dict() if "lora_" not in k}
        own = self.state_dict()
        missing = sorted(set(actual) - set(state))
        unexpected = sorted(set(state) - set(actual))
        shapes = [f"{k}: {tuple(state[k].shape)} vs model {tuple(own[actual[k]].shape)}"
                  for k in sorted(set(state) & set(actual)) if state[k].shape != own[actual[k]].shape]
        problems = [f"{what} ({len(keys)}): {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                    for what, keys in [("missing keys", missing), ("unexpected keys", unexpected),
                                       ("shape mismatches", shapes)] if keys]
        if problems:
            raise ValueError("; ".join(problems))
        self.load_state_dict({actual[k]: v for k, v in state.items()}, strict=False, assign=assign)


def canonical_key(key: str) -> str:
    """State-dict key without peft's wrapping (`base_model.model.`, `.base_layer`)."""
    return key.replace("language_model.base_model.model.", "language_model.").replace(".base_layer.", ".")


def _pad_left(rows: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


def _pad_right(rows: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width))
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


def build_model(cfg: LaMPConfig, device: str | torch.device = "cpu") -> LaMP:
    """A randomly initialised model of `cfg` (the trainer's and the policy's entry point); on the
    "meta" device it allocates nothing (parameter counts of the 7B preset)."""
    with torch.device(device):
        return LaMP(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
