"""LaMP checkpoints: a folder of plain files, never pickles, never remote code.

    config.json                 LaMPConfig (authoritative for the architecture) + format version
    model.safetensors           all non-LoRA weights under canonical names (LaMP.base_state_dict)
    adapter_config.json         the LLM's LoRA adapter in peft's format (only if one was trained)
    adapter_model.safetensors
    dataset_statistics.json     per dataset key: {"action": {"q01", "q99", "mask"}, "gripper"} (OpenVLA's
                                layout; "gripper" is "canonical" for lamp-bench's own data, see
                                action_tokenizer.py; absent = OpenVLA's [0, 1] with 1 = open)
    tokenizer.json (+ tokenizer_config.json)

Every problem with a folder raises CheckpointError naming the file and what is wrong.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import PreTrainedTokenizerBase

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.provenance import hash_files
from lamp_bench.models.action_tokenizer import ActionStats
from lamp_bench.models.config import MODEL_TYPE, LaMPConfig
from lamp_bench.models.lamp import LaMP, build_model
from lamp_bench.models.text_tokenizer import load_tokenizer

FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
STATISTICS = "dataset_statistics.json"
TOKENIZER = "tokenizer.json"


class CheckpointError(ConfigError):
    """A checkpoint folder that cannot be loaded; the message names the file and the problem."""


@dataclass
class Checkpoint:
    model: LaMP
    tokenizer: PreTrainedTokenizerBase
    statistics: dict[str, ActionStats]
    path: Path
    sha256: str  # over the safetensors files: the weights' identity

    @property
    def config(self) -> LaMPConfig:
        return self.model.cfg


def save_checkpoint(
    model: LaMP, directory: str | Path, tokenizer: PreTrainedTokenizerBase, statistics: dict[str, ActionStats]
) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not statistics:
        raise ValueError("a checkpoint needs the action statistics of at least one dataset")
    (directory / CONFIG).write_text(json.dumps({"format_version": FORMAT_VERSION, **model.cfg.to_dict()}, indent=2))
    save_file({k: v.detach().contiguous().cpu() for k, v in model.base_state_dict().items()},
              directory / WEIGHTS, metadata={"format": "pt"})
    if isinstance(model.language_model, PeftModel):
        model.language_model.peft_config["default"].save_pretrained(str(directory))
        adapter = get_peft_model_state_dict(model.language_model)
        save_file({k: v.detach().contiguous().cpu() for k, v in adapter.items()},
                  directory / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    (directory / STATISTICS).write_text(json.dumps({k: s.to_json() for k, s in statistics.items()}, indent=2))
    tokenizer.save_pretrained(str(directory))
    return directory


def checkpoint_hash(directory: str | Path) -> str:
    directory = Path(directory)
    return hash_files([p for p in (directory / WEIGHTS, directory / ADAPTER_WEIGHTS) if p.exists()])


def read_config(directory: str | Path) -> LaMPConfig:
    path = _require(Path(directory), CONFIG)
    data = _read_json(path)
    if not isinstance(data, dict) or data.get("model_type") != MODEL_TYPE:
        found = data.get("model_type") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(
            f"{path}: model_type is {found!r}, not {MODEL_TYPE!r}: this is not a lamp-bench checkpoint "
            "(an OpenVLA checkpoint must be converted first, see lamp_bench.models.openvla_hf)"
        )
    version = data.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {version!r}; this lamp-bench reads version {FORMAT_VERSION}")
    try:
        return LaMPConfig.from_dict(data)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: invalid config: {e}") from e


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu", merge_lora: bool = True) -> Checkpoint:
    """Build the checkpoint's model and load its weights. merge_lora=True folds the adapter into the
    LLM (inference); False keeps it separate (resuming training)."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint folder {directory} does not exist")
    cfg = read_config(directory)
    statistics = read_statistics(directory)
    tokenizer_path = _require(directory, TOKENIZER)
    try:
        tokenizer = load_tokenizer(directory)
    except Exception as e:  # tokenizers raises its own exception types for malformed JSON
        raise CheckpointError(f"{tokenizer_path}: cannot load the tokenizer: {e}") from e
    model = build_model(cfg)
    weights = _require(directory, WEIGHTS)
    try:
        model.load_base_state_dict(_read_safetensors(weights))
    except ValueError as e:
        raise CheckpointError(f"{weights}: does not match {CONFIG}: {e}") from e
    if (directory / ADAPTER_CONFIG).exists() or (directory / ADAPTER_WEIGHTS).exists():
        _load_adapter(model, directory)
        if merge_lora:
            model.merge_lora()
    return Checkpoint(model.to(device).eval(), tokenizer, statistics, directory, checkpoint_hash(directory))


def read_statistics(directory: Path) -> dict[str, ActionStats]:
    path = _require(directory, STATISTICS)
    data = _read_json(path)
    if not isinstance(data, dict) or not data:
        raise CheckpointError(f"{path}: expected an object mapping dataset keys to statistics")
    try:
        return {key: ActionStats.from_json(entry, f"{path} [{key}]") for key, entry in data.items()}
    except ValueError as e:
        raise CheckpointError(str(e)) from e


def _load_adapter(model: LaMP, directory: Path) -> None:
    config_path = _require(directory, ADAPTER_CONFIG)
    weights = _require(directory, ADAPTER_WEIGHTS)
    raw = _read_json(config_path)
    if not isinstance(raw, dict) or raw.get("peft_type") != "LORA":
        raise CheckpointError(f"{config_path}: not a peft LoRA adapter config (peft_type {raw.get('peft_type')!r})")
    expected = model.cfg.lora
    found = (raw.get("r"), raw.get("lora_alpha"), sorted(raw.get("target_modules") or []))
    if found != (expected.rank, expected.alpha, sorted(expected.targets)):
        raise CheckpointError(
            f"{config_path}: adapter (r, alpha, targets) = {found} differs from {CONFIG}'s lora settings "
            f"{(expected.rank, expected.alpha, sorted(expected.targets))}"
        )
    model.language_model = get_peft_model(model.language_model, LoraConfig.from_pretrained(str(directory)))
    state = _read_safetensors(weights)
    own = get_peft_model_state_dict(model.language_model)
    bad = sorted(set(own) ^ set(state)) + [k for k in own if k in state and own[k].shape != state[k].shape]
    if bad:
        raise CheckpointError(f"{weights}: adapter tensors do not match the model ({len(bad)} keys, e.g. {bad[:3]})")
    set_peft_model_state_dict(model.language_model, state)


def _require(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.is_file():
        raise CheckpointError(f"checkpoint {directory} has no {name}")
    return path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON: {e}") from e


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises SafetensorError / OSError for truncated or forged files
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {e}") from e
