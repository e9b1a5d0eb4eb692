"""OpenVLA checkpoints in their Hugging Face layout (the `openvla/openvla-7b` folder) -> lamp-bench's
action expert (a LaMP model without a motion expert), from local files only, without timm or remote code.

    config.json                          model_type "openvla": vision_backbone_id, llm_backbone_id,
                                         arch_specifier, use_fused_vision_backbone, timm_model_ids,
                                         image_sizes, n_action_bins, pad_to_multiple_of, norm_stats,
                                         text_config (a Llama config; absent fields take LlamaConfig's
                                         defaults, as OpenVLA's own loader does)
    model.safetensors.index.json         weight_map: tensor name -> shard file
    model-0000i-of-0000n.safetensors     (or a single model.safetensors)
    tokenizer.json / tokenizer.model (+ tokenizer_config.json ...)
    dataset_statistics.json              optional; when present it replaces config.json's norm_stats (as
                                         OpenVLA's evaluation code does: fine-tuned checkpoints carry
                                         their statistics there)
    preprocessor_config.json             optional; the images' normalisation per tower
                                         (`tvf_normalize_params`, what OpenVLA's processor applies)

The folder is used as it is (`load_openvla`, mapped in memory: what `--checkpoint DIR` does), or
written once as a lamp-bench checkpoint (`convert_openvla`, `lamp-bench convert`), which keeps the
file's dtype and shards.

Tensor names. `projector.fc1/fc2/fc3.*` and `language_model.*` (HF Llama) are lamp-bench's names
already. The two vision towers are timm ViTs (`vision_backbone.featurizer.*`: DINOv2 with registers;
`vision_backbone.fused_featurizer.*`: SigLIP) and are mapped onto transformers' towers here:

    timm                                  transformers (DINOv2 | SigLIP)
    patch_embed.proj                      embeddings.patch_embeddings.projection | embeddings.patch_embedding
    cls_token, reg_token                  embeddings.cls_token, embeddings.register_tokens | (none)
    pos_embed (1, Np, D)                  embeddings.position_embeddings (1, 1 + Np, D), CLS row zero
                                          (timm's DINOv2 adds no position to CLS) | position_embedding (Np, D)
    blocks.i.norm1 / norm2                encoder.layer.i.norm1 / norm2 | encoder.layers.i.layer_norm1 / 2
    blocks.i.attn.qkv (3D, D)             attention.{q,k,v}_proj | self_attn.{q,k,v}_proj (rows q, k, v)
    blocks.i.attn.proj                    attention.o_proj | self_attn.out_proj
    blocks.i.ls1 / ls2 (scale_factor)     layer_scale1 / 2.lambda1 (OpenVLA renames timm's `gamma` to
                                          `scale_factor`; both are accepted)
    blocks.i.mlp.fc1 / fc2                the same names

OpenVLA reads features after the second-to-last block, so the last block, the final `norm`, and
SigLIP's `attn_pool` head are in the file but never used: they are the only tensors allowed to be
left over. Every other tensor must map onto the model and every model tensor must come from the file
(errors list what is missing, unexpected, or mis-shaped, with the file it is in). DINOv2's
`mask_token` (masked pretraining only) has no timm counterpart and is set to zero.

Architecture. Widths, depths and register counts are read from the tensors' shapes; head counts,
which shapes do not show, from the timm model ids (`TIMM_HEADS`). Action tokens are the last
`n_action_bins` ids below the tokenizer's vocabulary (the embedding rows minus the
`pad_to_multiple_of` padding).
"""
from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from transformers import LlamaConfig, PreTrainedTokenizerBase

from lamp_bench.harness.provenance import hash_files
from lamp_bench.models.lamp.action_tokenizer import ActionStats
from lamp_bench.models.lamp.checkpoint import (OPENVLA_MODEL_TYPE, Checkpoint, CheckpointError, Shards,
                                          read_image_normalization,
                                          write_checkpoint)
from lamp_bench.models.lamp.config import ActionConfig, LaMPConfig, LLMConfig, VisionConfig, ViTConfig
from lamp_bench.models.lamp.model import LaMP, build_model
from lamp_bench.models.lamp.text_tokenizer import load_tokenizer
from lamp_bench.models.lamp.vision import ImageNormalization

MODEL_TYPE = OPENVLA_MODEL_TYPE
CONFIG = "config.json"
# Fine-tuned checkpoints carry their statistics here; OpenVLA's evaluation code reads it, when the
# folder has one, in place of config.json's norm_stats (and so does lamp-bench).
DATASET_STATISTICS = "dataset_statistics.json"
PRESET = "openvla-hf"
DEFAULT_SHARD_BYTES = 5 * 10**9  # transformers' default max_shard_size ("5GB")
# prismatic's projector of a fused backbone: fc1 -> GELU -> fc2 -> GELU -> fc3 (the only one lamp-bench builds)
FUSED_PROJECTORS = ("no-align+fused-gelu-mlp", "fused-gelu-mlp")
# Attention heads of the timm towers OpenVLA-family checkpoints use (not visible in tensor shapes).
TIMM_HEADS = {
    "vit_small_patch14_reg4_dinov2": 6,
    "vit_base_patch14_reg4_dinov2": 12,
    "vit_large_patch14_reg4_dinov2": 16,
    "vit_so400m_patch14_siglip_224": 16,
    "vit_so400m_patch14_siglip_384": 16,
}
DINO, SIGLIP = "vision_backbone.featurizer.", "vision_backbone.fused_featurizer."
# Tensors in the file that OpenVLA never uses (besides each tower's last block, added per checkpoint).
UNUSED = re.compile(
    r"vision_backbone\.(featurizer|fused_featurizer)\.(norm|fc_norm|head|attn_pool)\..*"
    r"|language_model\.model\.(layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq"
)


class OpenVLAError(CheckpointError):
    """An OpenVLA folder that cannot be loaded; the message names the file and the problem."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OpenVLAError(f"{path}: not valid JSON: {e}") from e


# --- config ----------------------------------------------------------------------------------------


def _config_json(directory: Path) -> tuple[Path, dict]:
    path = directory / CONFIG
    if not path.is_file():
        raise OpenVLAError(f"{directory} has no {CONFIG}: not a Hugging Face checkpoint folder")
    data = _read_json(path)
    if not isinstance(data, dict) or data.get("model_type") != MODEL_TYPE:
        found = data.get("model_type") if isinstance(data, dict) else type(data).__name__
        raise OpenVLAError(f"{path}: model_type is {found!r}, not {MODEL_TYPE!r}: not an OpenVLA checkpoint")
    return path, data


@dataclass(frozen=True)
class OpenVLAConfig:
    model: LaMPConfig
    statistics: dict[str, ActionStats]
    normalization: ImageNormalization  # from preprocessor_config.json (OpenVLA's processor), else defaults
    statistics_file: Path  # where `statistics` came from: dataset_statistics.json or config.json


def _field(data: dict, key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    if key not in data:
        raise OpenVLAError(f"{path}: missing field {key!r}")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise OpenVLAError(f"{path}: field {key!r} is {value!r}, expected {getattr(kind, '__name__', kind)}")
    return value


def _tower(shards: Shards, prefix: str, timm_id: str, image_size: int, path: Path) -> tuple[ViTConfig, int]:
    """One tower's dimensions from its tensors' shapes -> (config, patch size)."""
    name = timm_id.split(".")[0]  # drop the pretrained tag (".lvd142m")
    if name not in TIMM_HEADS:
        raise OpenVLAError(f"{path}: timm model {timm_id!r} is not one lamp-bench knows; known: {sorted(TIMM_HEADS)}")
    patch_key = f"{prefix}patch_embed.proj.weight"
    if patch_key not in shards:
        raise OpenVLAError(f"the weights have no {patch_key} (is this an OpenVLA checkpoint with a fused backbone?)")
    hidden, _, patch, _ = shards.shape(patch_key)
    blocks = {int(m.group(1)) for k in shards.files if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k))}
    if not blocks or blocks != set(range(len(blocks))):
        raise OpenVLAError(f"the weights' {prefix}blocks.* are not numbered 0..n-1: {sorted(blocks)[:10]}")
    registers = shards.shape(f"{prefix}reg_token")[1] if f"{prefix}reg_token" in shards else 0
    fc1 = f"{prefix}blocks.0.mlp.fc1.weight"
    if fc1 not in shards:
        raise OpenVLAError(f"the weights have no {fc1}")
    heads = TIMM_HEADS[name]
    if hidden % heads:
        raise OpenVLAError(f"{shards.files[patch_key]}: {prefix} width {hidden} is not divisible by "
                           f"{timm_id}'s {heads} heads")
    if image_size % patch:
        raise OpenVLAError(f"{path}: image size {image_size} is not a multiple of {timm_id}'s patch size {patch}")
    return ViTConfig(hidden, len(blocks), heads, shards.shape(fc1)[0], num_register_tokens=registers), patch


def _llm(text_config: dict, vocab_end: int, prompt_suffix_id: int | None, path: Path) -> LLMConfig:
    try:  # absent fields: LlamaConfig's defaults (Llama-2-7B), as OpenVLA's HF code builds it
        llama = LlamaConfig(**text_config)
    except Exception as e:
        raise OpenVLAError(f"{path}: text_config is not a valid Llama config: {e}") from e
    rope = dict(llama.rope_parameters or {})
    unsupported = {k: v for k, v in [("hidden_act", llama.hidden_act), ("attention_bias", llama.attention_bias),
                                     ("mlp_bias", llama.mlp_bias), ("tie_word_embeddings", llama.tie_word_embeddings),
                                     ("rope_type", rope.get("rope_type", "default"))]
                   if v != {"hidden_act": "silu", "rope_type": "default"}.get(k, False)}
    if unsupported:
        raise OpenVLAError(f"{path}: text_config settings lamp-bench's Llama does not build: {unsupported}")
    return LLMConfig(
        hidden_size=llama.hidden_size, num_layers=llama.num_hidden_layers, num_heads=llama.num_attention_heads,
        intermediate_size=llama.intermediate_size, vocab_size=llama.vocab_size,
        num_kv_heads=None if llama.num_key_value_heads == llama.num_attention_heads else llama.num_key_value_heads,
        max_position_embeddings=llama.max_position_embeddings,
        rms_norm_eps=float(llama.rms_norm_eps), rope_theta=float(rope.get("rope_theta", 10000.0)),
        bos_token_id=llama.bos_token_id, eos_token_id=llama.eos_token_id, pad_token_id=llama.pad_token_id,
        prompt_suffix_id=prompt_suffix_id,
    )


def _parse_config(directory: Path, shards: Shards, tokenizer: PreTrainedTokenizerBase) -> OpenVLAConfig:
    path, data = _config_json(directory)
    arch = _field(data, "arch_specifier", str, path)
    if arch not in FUSED_PROJECTORS:
        raise OpenVLAError(f"{path}: arch_specifier {arch!r}; lamp-bench builds the fused GELU MLP projector "
                           f"({' or '.join(FUSED_PROJECTORS)}) only")
    if _field(data, "use_fused_vision_backbone", bool, path) is not True:
        raise OpenVLAError(f"{path}: use_fused_vision_backbone is false; lamp-bench builds the fused "
                           "DINOv2 + SigLIP backbone (vision_backbone_id 'dinosiglip-*') only")
    timm_ids = _field(data, "timm_model_ids", list, path)
    if len(timm_ids) != 2 or "dinov2" not in str(timm_ids[0]) or "siglip" not in str(timm_ids[1]):
        raise OpenVLAError(f"{path}: timm_model_ids {timm_ids} are not [DINOv2 (with registers), SigLIP]")
    sizes = _field(data, "image_sizes", list, path)
    if not sizes or any(s != sizes[0] or not isinstance(s, int) for s in sizes):
        raise OpenVLAError(f"{path}: image_sizes {sizes} must be one square size for both towers")
    overrides = data.get("timm_override_act_layers") or [None, None]
    if any(o is not None for o in overrides):
        raise OpenVLAError(f"{path}: timm_override_act_layers {overrides} are not supported")
    n_bins = _field(data, "n_action_bins", int, path)
    padding = _field(data, "pad_to_multiple_of", int, path)
    text_config = _field(data, "text_config", dict, path)
    statistics_file, statistics = _statistics(directory, path, data)

    dino, patch = _tower(shards, DINO, str(timm_ids[0]), sizes[0], path)
    siglip, siglip_patch = _tower(shards, SIGLIP, str(timm_ids[1]), sizes[0], path)
    if patch != siglip_patch:
        raise OpenVLAError(f"{path}: the towers' patch sizes differ ({patch} vs {siglip_patch})")
    suffix = tokenizer.convert_tokens_to_ids("▁")  # OpenVLA appends Llama-2's empty "▁" (29871) after "Out:"
    suffix = None if suffix is None or suffix == tokenizer.unk_token_id else int(suffix)
    vocab = int(text_config.get("vocab_size", LlamaConfig().vocab_size))
    llm = _llm(text_config, vocab - padding, suffix, path)
    try:
        model = LaMPConfig(
            preset=PRESET,
            vision=VisionConfig(sizes[0], patch, dino, siglip),
            llm=llm,
            action=ActionConfig(vocab_end=vocab - padding, n_bins=n_bins),
        )
    except ValueError as e:
        raise OpenVLAError(f"{path}: inconsistent OpenVLA config: {e}") from e
    return OpenVLAConfig(model, statistics, read_image_normalization(directory, OpenVLAError), statistics_file)


def _statistics(directory: Path, config_path: Path, data: dict) -> tuple[Path, dict[str, ActionStats]]:
    """dataset_statistics.json when the folder has one, else config.json's norm_stats."""
    path = directory / DATASET_STATISTICS
    if path.is_file():
        stats_json, where = _read_json(path), str(path)
        if not isinstance(stats_json, dict):
            raise OpenVLAError(f"{path}: expected an object mapping dataset keys to statistics")
    else:
        path, stats_json = config_path, _field(data, "norm_stats", dict, config_path)
        where = f"{config_path} norm_stats"
    if not stats_json:
        raise OpenVLAError(f"{where} is empty; actions cannot be un-normalised without statistics")
    try:
        statistics = {key: ActionStats.from_json(entry, f"{where}[{key!r}]") for key, entry in stats_json.items()}
    except ValueError as e:
        raise OpenVLAError(str(e)) from e
    # OpenVLA's LIBERO evaluation falls back from "<suite>" to "<suite>_no_noops" (its fine-tuning keys).
    for key in [k for k in statistics if k.endswith("_no_noops")]:
        statistics.setdefault(key.removesuffix("_no_noops"), statistics[key])
    return path, statistics


# --- tensor mapping ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """How one lamp-bench tensor is made from checkpoint tensors."""

    sources: tuple[str, ...]
    make: Callable[[list[torch.Tensor]], torch.Tensor] = lambda ts: ts[0]


def _qkv(key: str, part: int) -> Rule:
    return Rule((key,), lambda ts: ts[0].chunk(3, dim=0)[part])  # timm's fused rows are [q; k; v]


def _layer_scale(shards: Shards, block: str) -> str:
    return "scale_factor" if f"{block}.scale_factor" in shards else "gamma"


def _tower_rules(shards: Shards, cfg: ViTConfig, dino: bool) -> dict[str, Rule]:
    src = DINO if dino else SIGLIP
    rules: dict[str, Rule] = {}
    if dino:
        dst = DINO
        emb = f"{dst}embeddings."
        rules[f"{emb}patch_embeddings.projection.weight"] = Rule((f"{src}patch_embed.proj.weight",))
        rules[f"{emb}patch_embeddings.projection.bias"] = Rule((f"{src}patch_embed.proj.bias",))
        rules[f"{emb}cls_token"] = Rule((f"{src}cls_token",))
        if cfg.num_register_tokens:
            rules[f"{emb}register_tokens"] = Rule((f"{src}reg_token",))
        rules[f"{emb}position_embeddings"] = Rule(
            (f"{src}pos_embed",), lambda ts: torch.cat([ts[0].new_zeros(1, 1, ts[0].shape[-1]), ts[0]], dim=1))
        # masked pretraining only: zero, in the checkpoint's dtype (the CLS token's)
        rules[f"{emb}mask_token"] = Rule((f"{src}cls_token",), lambda ts: ts[0].new_zeros(1, cfg.hidden_size))
        layer, attn, out, norms, scale = "encoder.layer", "attention", "attention.o_proj", ("norm1", "norm2"), True
    else:
        dst = SIGLIP
        emb = f"{dst}embeddings."
        rules[f"{emb}patch_embedding.weight"] = Rule((f"{src}patch_embed.proj.weight",))
        rules[f"{emb}patch_embedding.bias"] = Rule((f"{src}patch_embed.proj.bias",))
        rules[f"{emb}position_embedding.weight"] = Rule((f"{src}pos_embed",), lambda ts: ts[0][0])
        layer, attn, out, scale = "encoder.layers", "self_attn", "self_attn.out_proj", False
        norms = ("layer_norm1", "layer_norm2")
    for i in range(cfg.num_layers - 1):  # features come from the second-to-last block
        a, b = f"{src}blocks.{i}.", f"{dst}{layer}.{i}."
        for p in ("weight", "bias"):
            rules[f"{b}{norms[0]}.{p}"] = Rule((f"{a}norm1.{p}",))
            rules[f"{b}{norms[1]}.{p}"] = Rule((f"{a}norm2.{p}",))
            for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
                rules[f"{b}{attn}.{proj}.{p}"] = _qkv(f"{a}attn.qkv.{p}", j)
            rules[f"{b}{out}.{p}"] = Rule((f"{a}attn.proj.{p}",))
            rules[f"{b}mlp.fc1.{p}"] = Rule((f"{a}mlp.fc1.{p}",))
            rules[f"{b}mlp.fc2.{p}"] = Rule((f"{a}mlp.fc2.{p}",))
        if scale:
            for n in (1, 2):
                rules[f"{b}layer_scale{n}.lambda1"] = Rule((f"{a}ls{n}.{_layer_scale(shards, f'{a}ls{n}')}",))
    return rules


def mapping_rules(shards: Shards, model_keys: list[str], cfg: LaMPConfig) -> dict[str, Rule]:
    """lamp-bench key -> rule for every action-expert tensor of the model."""
    rules = {**_tower_rules(shards, cfg.vision.dino, dino=True), **_tower_rules(shards, cfg.vision.siglip, dino=False)}
    for key in model_keys:  # projector and LLM: the same names
        if key.startswith(("projector.", "language_model.")):
            rules[key] = Rule((key,))
    return rules


def checked_rules(shards: Shards, cfg: LaMPConfig, expected: dict[str, tuple[int, ...]]) -> dict[str, Rule]:
    """The mapping for the model keys in `expected`, after checking by name (no tensor is read) that the
    file has every tensor it needs and none it cannot place."""
    rules = mapping_rules(shards, list(expected), cfg)
    unknown = sorted(set(rules) - set(expected))
    if unknown:  # the mapping names model tensors that do not exist: lamp-bench's model changed
        raise RuntimeError(f"OpenVLA mapping targets tensors the model lacks: {unknown[:5]}")
    needed = {s for r in rules.values() for s in r.sources}
    unused_blocks = re.compile(rf"({re.escape(DINO)}blocks\.{cfg.vision.dino.num_layers - 1}"
                               rf"|{re.escape(SIGLIP)}blocks\.{cfg.vision.siglip.num_layers - 1})\..*")
    missing = sorted(needed - set(shards.files))
    unexpected = sorted(k for k in set(shards.files) - needed if not UNUSED.fullmatch(k) and not unused_blocks.fullmatch(k))
    not_built = sorted(set(expected) - set(rules))
    problems = [f"{what} ({len(keys)}): {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
                for what, keys in [("missing tensors", missing), ("unexpected tensors", unexpected),
                                   ("model tensors with no source", not_built)] if keys]
    if problems:
        where = sorted({str(shards.files[k].name) for k in unexpected}) if unexpected else []
        raise OpenVLAError(f"{shards.paths()[0].parent}: the weights do not match the OpenVLA architecture of "
                           f"{CONFIG}: {'; '.join(problems)}" + (f" (unexpected ones are in {where})" if where else ""))
    return rules


def mapped_tensors(shards: Shards, cfg: LaMPConfig, expected: dict[str, tuple[int, ...]]
                   ) -> Iterator[tuple[str, torch.Tensor]]:
    """The action-expert tensors under lamp-bench's names, one at a time, in the file's dtype, strictly:
    `expected` maps each model key (vision backbone, projector, LLM) to its shape."""
    for key, rule in checked_rules(shards, cfg, expected).items():
        tensor = rule.make([shards.get(s) for s in rule.sources])
        if tuple(tensor.shape) != tuple(expected[key]):
            source = rule.sources[0] if rule.sources else key
            raise OpenVLAError(f"{shards.files.get(source, '?')}: {source} has shape {shards.shape(source)}, which gives "
                               f"{tuple(tensor.shape)} for {key}; {CONFIG} implies {tuple(expected[key])}")
        yield key, tensor


def openvla_state_dict(shards: Shards, cfg: LaMPConfig, expected: dict[str, tuple[int, ...]],
                       dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """`mapped_tensors` collected, cast to `dtype`."""
    return {key: tensor.to(dtype).contiguous() for key, tensor in mapped_tensors(shards, cfg, expected)}


# --- loading ---------------------------------------------------------------------------------------


def _open(directory: str | Path) -> tuple[Path, Shards, PreTrainedTokenizerBase, OpenVLAConfig]:
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise OpenVLAError(f"OpenVLA checkpoint folder {directory} does not exist")
    _config_json(directory)  # the cheapest, clearest problems first
    if not (directory / "tokenizer.json").is_file() and not (directory / "tokenizer.model").is_file():
        raise OpenVLAError(f"{directory} has no tokenizer.json or tokenizer.model")
    try:
        tokenizer = load_tokenizer(directory)
    except Exception as e:  # tokenizers / sentencepiece raise their own types for bad files
        raise OpenVLAError(f"{directory}: cannot load the tokenizer: {e}") from e
    shards = Shards(directory, OpenVLAError)
    return directory, shards, tokenizer, _parse_config(directory, shards, tokenizer)


def _expected_shapes(config: OpenVLAConfig) -> dict[str, tuple[int, ...]]:
    """Every base tensor of the action expert the folder describes, by name (a meta-device build)."""
    return {k: tuple(v.shape) for k, v in build_model(config.model, device="meta").base_state_dict().items()}


def validate_openvla(directory: str | Path) -> LaMPConfig:
    """Check an OpenVLA folder without reading its tensors' data (config, tokenizer, statistics,
    preprocessor config, safetensors headers, every tensor name); returns the model's config."""
    directory, shards, _, config = _open(directory)
    checked_rules(shards, config.model, _expected_shapes(config))
    return config.model


def read_openvla_config(directory: str | Path) -> OpenVLAConfig:
    """The LaMPConfig (no motion expert) and action statistics an OpenVLA folder describes; add a
    motion expert with `.model.replace(motion=..., bridge=...)` and fill it with `load_openvla_weights`."""
    return _open(directory)[3]


def load_openvla(directory: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """The OpenVLA action expert (float32) with its tokenizer and action statistics. Parameters are
    created empty and take the file's tensors directly, so peak memory is about one model copy."""
    from accelerate import init_empty_weights  # peft's dependency

    directory, shards, tokenizer, config = _open(directory)
    with init_empty_weights(include_buffers=False):  # parameters on "meta"; buffers (rotary, norms) real
        model = build_model(config.model)
    expected = {k: tuple(v.shape) for k, v in model.base_state_dict().items()}
    model.load_base_state_dict(openvla_state_dict(shards, config.model, expected), assign=True)
    left = [n for n, p in model.named_parameters() if p.is_meta]
    if left:
        raise RuntimeError(f"parameters not loaded from {directory}: {left[:5]}")
    model.vision_backbone.set_normalization(config.normalization)
    return Checkpoint(model.to(device).eval(), tokenizer, config.statistics, directory, hash_files(shards.paths()))


def load_openvla_weights(model: LaMP, directory: str | Path) -> None:
    """Initialise an existing LaMP model's action expert (vision backbone, projector, LLM) from an
    OpenVLA folder whose architecture it must share; its motion expert and bridges are left as they are."""
    directory, shards, _, config = _open(directory)
    own, theirs = model.cfg, config.model
    diffs = [name for name in ("vision", "llm", "action") if getattr(own, name) != getattr(theirs, name)]
    if diffs:
        raise OpenVLAError(f"{directory}: the model's {', '.join(diffs)} config differs from the checkpoint's: "
                           + "; ".join(f"{n}: model {getattr(own, n)} vs checkpoint {getattr(theirs, n)}" for n in diffs))
    base = model.base_state_dict()
    action_expert = ("vision_backbone.", "projector.", "language_model.")
    expected = {k: tuple(v.shape) for k, v in base.items() if k.startswith(action_expert)}
    state = openvla_state_dict(shards, theirs, expected)
    model.load_base_state_dict({**base, **{k: v.to(base[k].dtype) for k, v in state.items()}})
    model.vision_backbone.set_normalization(config.normalization)


def convert_openvla(directory: str | Path, out: str | Path, max_shard_size: int | None = DEFAULT_SHARD_BYTES) -> Path:
    """Write an OpenVLA folder as a lamp-bench checkpoint (what `--checkpoint` and training's
    init_checkpoint read): the tensors mapped one at a time and kept in the file's dtype (bf16 stays
    bf16), in shards of at most `max_shard_size` bytes (None: one file). It is written into a temporary
    sibling folder and renamed at the end, so an interrupted conversion leaves no half checkpoint."""
    directory, shards, tokenizer, config = _open(directory)
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OpenVLAError(f"{out} already exists and is not an empty folder: choose a new folder for the checkpoint")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as work:
        staging = Path(work) / "checkpoint"
        write_checkpoint(staging, config.model, mapped_tensors(shards, config.model, _expected_shapes(config)),
                         tokenizer, config.statistics, config.normalization, max_shard_size)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    return out
