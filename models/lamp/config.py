"""Typed configuration of the LaMP model family, its presets, and strict JSON (de)serialisation.

One config describes every member of the family: `motion=None` is the OpenVLA-style action expert
alone; otherwise a motion expert and cross-attention bridges are attached. The checkpoint's
config.json is authoritative for the architecture; policy variants only change inference options.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from lamp_bench.harness.config import ConfigError

MODEL_TYPE = "lamp"
DEPTH_SOURCES = ("dav2", "midas", "zoedepth", "sim")


@dataclass(frozen=True)
class ViTConfig:
    """One ViT tower. `num_layers` is the tower's full depth as published; features come from the
    second-to-last block (as OpenVLA), so the last block is never built."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    num_register_tokens: int = 0  # DINOv2-with-registers only


@dataclass(frozen=True)
class VisionConfig:
    """OpenVLA's fused backbone: DINOv2 (ImageNet normalisation) + SigLIP (0.5/0.5 normalisation)
    patch features concatenated channel-wise."""

    image_size: int
    patch_size: int
    dino: ViTConfig
    siglip: ViTConfig

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    @property
    def feature_dim(self) -> int:
        return self.dino.hidden_size + self.siglip.hidden_size


@dataclass(frozen=True)
class LLMConfig:
    """The Llama decoder of the action expert."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int  # embedding rows (OpenVLA pads 32000 -> 32064)
    num_kv_heads: int | None = None  # None: = num_heads
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 0
    # Llama-2's SentencePiece tokenizer ends "Out:" without the empty "▁" token (29871) OpenVLA was
    # trained with; OpenVLA appends it when missing. None for tokenizers that need no such fix.
    prompt_suffix_id: int | None = None


@dataclass(frozen=True)
class ActionConfig:
    """OpenVLA's action tokenizer: `n_bins` uniform bins on [-1, 1] mapped to the last `n_bins` ids
    below `vocab_end` (the tokenizer's vocabulary size, excluding embedding padding)."""

    vocab_end: int
    n_bins: int = 256
    dim: int = 7


@dataclass(frozen=True)
class DepthConfig:
    source: str = "dav2"  # one of DEPTH_SOURCES; "sim" reads Observation.depth
    # Monocular estimators run at their own (lower) square resolution: depth is only sampled at patch
    # centres, and at the policy's image size it would cost more than the whole motion pathway.
    input_size: int = 112

    def __post_init__(self) -> None:
        if self.source not in DEPTH_SOURCES:
            raise ConfigError(f"depth source {self.source!r} is not one of {DEPTH_SOURCES}")


@dataclass(frozen=True)
class MotionConfig:
    """Flow-matching transformer over the lifted patch points; its last hidden states are the prior."""

    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_ratio: float = 4.0
    pos_freqs: int = 6  # Fourier frequencies of the 3D positional encoding (pi * 2^k rad/m)
    sigma: float = 0.5  # std of the noise the flow starts from
    steps: int = 1  # Euler steps at inference (LaMP: 1)
    # Flow targets (metres) are multiplied by this before flow matching, so that the data the flow
    # reaches is not swamped by sigma-sized noise; predictions are divided by it.
    flow_scale: float = 1.0
    depth: DepthConfig = field(default_factory=DepthConfig)


@dataclass(frozen=True)
class BridgeConfig:
    """Cross-attention from LLM hidden states (queries) to the motion prior H (keys/values)."""

    layers: tuple[int, ...]  # LLM decoder layers whose outputs are updated
    num_heads: int
    head_dim: int
    gated: bool = True  # False: Z' = Z + CrossAttn (ablation)


@dataclass(frozen=True)
class LoraSettings:
    """LoRA of the LLM for fine-tuning (applied by `LaMP.add_lora`, saved in peft format)."""

    rank: int = 64
    alpha: int = 16  # OpenVLA's fine-tuning recipe: alpha = min(rank, 16)
    targets: tuple[str, ...] = ("q_proj", "k_proj")


@dataclass(frozen=True)
class LaMPConfig:
    preset: str
    vision: VisionConfig
    llm: LLMConfig
    action: ActionConfig
    motion: MotionConfig | None = None  # None: OpenVLA-style action expert alone
    bridge: BridgeConfig | None = None
    lora: LoraSettings = field(default_factory=LoraSettings)
    # One extra LLM token after the patches projecting the robot's proprioception (PROPRIO_DIM values:
    # end-effector position and gripper joints, normalised with the dataset's q01/q99), as OpenVLA-OFT
    # adds. OpenVLA and the paper have none; the tiny preset has it, because a 64-px third-person image
    # alone does not tell a from-scratch model whether the open hand hovers above the bowl or is at it.
    proprio: bool = False
    model_type: str = MODEL_TYPE

    def __post_init__(self) -> None:
        if (self.motion is None) != (self.bridge is None):
            raise ConfigError("motion and bridge configs come together (both or neither)")
        if self.bridge is not None:
            bad = [i for i in self.bridge.layers if not 0 <= i < self.llm.num_layers]
            if bad:
                raise ConfigError(f"bridge layers {bad} outside the LLM's 0..{self.llm.num_layers - 1}")
        if self.vision.image_size % self.vision.patch_size:
            raise ConfigError("image_size must be a multiple of patch_size")
        if self.action.vocab_end > self.llm.vocab_size or self.action.vocab_end < self.action.n_bins:
            raise ConfigError(f"action vocab_end {self.action.vocab_end} does not fit vocab {self.llm.vocab_size}")

    def replace(self, **changes: Any) -> "LaMPConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "LaMPConfig":
        return _build(cls, data, "config")


def _build(tp: Any, value: Any, where: str) -> Any:
    """Strictly rebuild a (nested) dataclass from JSON values; errors name the offending key."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _build(inner, value, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}")
        required = [f.name for f in dataclasses.fields(tp)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [n for n in required if n not in value]
        if missing:
            raise ConfigError(f"{where}: missing keys {missing}")
        return tp(**{k: _build(hints[k], v, f"{where}.{k}") for k, v in value.items()})
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (inner, _) = typing.get_args(tp)
        return tuple(_build(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


# --- presets -----------------------------------------------------------------------------------
# The self-contained byte-level tokenizer (text_tokenizer.py) has 516 ids; the last 256 are actions.
BYTE_VOCAB = 516


def _tiny() -> LaMPConfig:
    """Trains on a 2-core CPU in minutes; ~1M-parameter motion expert."""
    return LaMPConfig(
        preset="tiny",
        vision=VisionConfig(
            image_size=64, patch_size=8,
            dino=ViTConfig(64, 3, 2, 128, num_register_tokens=1),
            siglip=ViTConfig(64, 3, 2, 128),
        ),
        llm=LLMConfig(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=344,
                      vocab_size=BYTE_VOCAB, max_position_embeddings=512, pad_token_id=3),
        action=ActionConfig(vocab_end=BYTE_VOCAB),
        motion=MotionConfig(hidden_size=128, num_layers=4, num_heads=4, depth=DepthConfig("sim", 64)),
        bridge=BridgeConfig(layers=(2, 3), num_heads=4, head_dim=32),
        lora=LoraSettings(rank=8, alpha=8),
        proprio=True,
    )


def _small() -> LaMPConfig:
    """~200M parameters at 224 px: the CPU profiling target."""
    return LaMPConfig(
        preset="small",
        vision=VisionConfig(
            image_size=224, patch_size=14,
            dino=ViTConfig(384, 12, 6, 1536, num_register_tokens=4),
            siglip=ViTConfig(384, 12, 6, 1536),
        ),
        llm=LLMConfig(hidden_size=1024, num_layers=12, num_heads=16, intermediate_size=2816,
                      vocab_size=BYTE_VOCAB, max_position_embeddings=1024, pad_token_id=3),
        action=ActionConfig(vocab_end=BYTE_VOCAB),
        motion=MotionConfig(hidden_size=256, num_layers=4, num_heads=4, depth=DepthConfig("dav2", 112)),
        bridge=BridgeConfig(layers=(6, 9), num_heads=8, head_dim=32),
        lora=LoraSettings(rank=16, alpha=16),
    )


def _openvla_7b() -> LaMPConfig:
    """OpenVLA-7B dimensions (DINOv2 ViT-L/14-reg4 + SigLIP SO400M/14 at 224 px, Llama-2-7B) with a
    ~100M motion expert and bridges at middle and late layers."""
    return LaMPConfig(
        preset="openvla-7b",
        vision=VisionConfig(
            image_size=224, patch_size=14,
            dino=ViTConfig(1024, 24, 16, 4096, num_register_tokens=4),
            siglip=ViTConfig(1152, 27, 16, 4304),
        ),
        llm=LLMConfig(hidden_size=4096, num_layers=32, num_heads=32, intermediate_size=11008,
                      vocab_size=32064, max_position_embeddings=2048, pad_token_id=32000,
                      prompt_suffix_id=29871),
        action=ActionConfig(vocab_end=32000),
        motion=MotionConfig(hidden_size=1024, num_layers=8, num_heads=16, depth=DepthConfig("dav2", 224)),
        bridge=BridgeConfig(layers=(16, 20, 24, 28), num_heads=16, head_dim=64),
        lora=LoraSettings(rank=64, alpha=16),
    )


PRESETS = {"tiny": _tiny, "small": _small, "openvla-7b": _openvla_7b}


def preset(name: str) -> LaMPConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]()
