"""LaMP checkpoints: a folder of plain files, never pickles, never remote code.

    config.json                 LaMPConfig (authoritative for the architecture) + format version
    model.safetensors           all non-LoRA weights under canonical names (LaMP.base_state_dict), or,
                                sharded as transformers does: model.safetensors.index.json (weight_map:
                                tensor name -> file) + model-0000i-of-0000n.safetensors. Any float dtype
                                (`lamp-bench convert` keeps an OpenVLA checkpoint's bf16); loading casts
                                to the model's own (float32)
    adapter_config.json         the LLM's LoRA adapter in peft's format (only if one was trained)
    adapter_model.safetensors
    dataset_statistics.json     per dataset key: {"action": {"q01", "q99", "mask"}, "gripper"} (OpenVLA's
                                layout; "gripper" is "canonical" for lamp-bench's own data, see
                                action_tokenizer.py; absent = OpenVLA's [0, 1] with 1 = open)
    preprocessor_config.json    the images' normalisation per tower (vision.ImageNormalization); absent
                                in older checkpoints: the defaults
    tokenizer.json (+ tokenizer_config.json)

`load_checkpoint` and `validate_checkpoint` also take an OpenVLA folder in its Hugging Face layout
(`openvla/openvla-7b`; see openvla_hf), mapped in memory. Every problem with a folder raises
CheckpointError naming the file and what is wrong.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
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
from lamp_bench.models.lamp.action_tokenizer import ActionStats
from lamp_bench.models.lamp.config import MODEL_TYPE, LaMPConfig
from lamp_bench.models.lamp.model import LaMP, build_model
from lamp_bench.models.lamp.text_tokenizer import load_tokenizer
from lamp_bench.models.lamp.vision import ImageNormalization

FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
STATISTICS = "dataset_statistics.json"
PREPROCESSOR = "preprocessor_config.json"
TOKENIZER = "tokenizer.json"
OPENVLA_MODEL_TYPE = "openvla"  # openvla_hf.MODEL_TYPE (imported lazily there: it imports this module)


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


# --- safetensors files: one, or shards with an index -------------------------------------------------


class Shards:
    """A folder's tensors across its safetensors files (memory-mapped; read one at a time). Opening
    reads only the headers: every file must parse and agree with the index."""

    def __init__(self, directory: Path, error: type[CheckpointError] = CheckpointError):
        self.error = error
        index = directory / WEIGHTS_INDEX
        if index.is_file():
            data = _read_json(index, error)
            weight_map = data.get("weight_map") if isinstance(data, dict) else None
            if not isinstance(weight_map, dict) or not weight_map:
                raise error(f"{index}: no weight_map object mapping tensor names to shard files")
            expected: dict[str, set[str]] | None = {}
            for key, shard in weight_map.items():
                expected.setdefault(str(shard), set()).add(key)
            outside = sorted(s for s in expected if Path(s).name != s)
            if outside:
                raise error(f"{index} names shard files outside the folder: {outside}")
            missing = sorted(s for s in expected if not (directory / s).is_file())
            if missing:
                raise error(f"{index} lists shard files that are not in {directory}: {missing}")
        elif (directory / WEIGHTS).is_file():
            expected = None
        else:
            pickles = sorted(p.name for p in directory.glob("*.bin"))
            raise error(f"checkpoint {directory} has no {WEIGHTS} (nor a sharded {WEIGHTS_INDEX})"
                        + (f"; only {pickles}: pickled weights are never loaded" if pickles else ""))
        self.files: dict[str, Path] = {}  # tensor name -> its file
        self._handles: dict[str, Any] = {}
        for name in sorted(expected) if expected is not None else [WEIGHTS]:
            path = directory / name
            try:
                handle = safe_open(str(path), framework="pt")
                keys = set(handle.keys())
            except Exception as e:  # SafetensorError, OSError, ... for truncated or forged files
                raise error(f"{path}: not a readable safetensors file (truncated or corrupt?): {e}") from e
            if expected is not None and keys != expected[name]:
                absent, extra = sorted(expected[name] - keys), sorted(keys - expected[name])
                raise error(f"{path} does not hold what {WEIGHTS_INDEX} says: missing {absent[:5]}, "
                            f"not in the index {extra[:5]}")
            self._handles[name] = handle
            self.files.update({k: path for k in keys})

    def __contains__(self, key: str) -> bool:
        return key in self.files

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._handles[self.files[key].name].get_slice(key).get_shape())

    def get(self, key: str) -> torch.Tensor:
        try:
            return self._handles[self.files[key].name].get_tensor(key)
        except Exception as e:
            raise self.error(f"{self.files[key]}: cannot read tensor {key}: {e}") from e

    def paths(self) -> list[Path]:
        return sorted(set(self.files.values()))


class ShardWriter:
    """Writes tensors as they come into safetensors files of at most `max_bytes` each (a bigger tensor
    gets a file of its own), named as transformers does: one model.safetensors when everything fits in
    one, else model-0000i-of-0000n.safetensors + model.safetensors.index.json. Peak memory: one shard."""

    def __init__(self, directory: Path, max_bytes: int | None = None):
        self.directory, self.max_bytes = directory, max_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = self.total_bytes = 0
        self._written: list[tuple[Path, list[str]]] = []
        self._keys: set[str] = set()

    def add(self, key: str, tensor: torch.Tensor) -> None:
        if key in self._keys:
            raise ValueError(f"tensor {key} written twice")
        self._keys.add(key)
        size = tensor.numel() * tensor.element_size()
        if self._pending and self.max_bytes is not None and self._pending_bytes + size > self.max_bytes:
            self._flush()
        tensor = tensor.detach().cpu().contiguous()
        if tensor.untyped_storage().nbytes() != size:  # a view into a bigger tensor: safetensors wants its own
            tensor = tensor.clone()
        self._pending[key] = tensor
        self._pending_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        path = self.directory / f"model-{len(self._written) + 1:05d}.partial.safetensors"
        save_file(self._pending, str(path), metadata={"format": "pt"})
        self._written.append((path, list(self._pending)))
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> list[Path]:
        if self._pending or not self._written:
            self._flush()
        if len(self._written) == 1:
            return [self._written[0][0].rename(self.directory / WEIGHTS)]
        n, weight_map, paths = len(self._written), {}, []
        for i, (path, keys) in enumerate(self._written, 1):
            final = path.rename(self.directory / f"model-{i:05d}-of-{n:05d}.safetensors")
            weight_map.update({k: final.name for k in keys})
            paths.append(final)
        (self.directory / WEIGHTS_INDEX).write_text(json.dumps(
            {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}, indent=2))
        return paths


# --- writing -------------------------------------------------------------------------------------------


def write_checkpoint(directory: str | Path, cfg: LaMPConfig, tensors: Iterable[tuple[str, torch.Tensor]],
                     tokenizer: PreTrainedTokenizerBase, statistics: dict[str, ActionStats],
                     normalization: ImageNormalization, max_shard_size: int | None = None) -> Path:
    """A checkpoint folder from base weights given one at a time (canonical names, any dtype)."""
    directory = Path(directory)
    if not statistics:
        raise ValueError("a checkpoint needs the action statistics of at least one dataset")
    directory.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(directory, max_shard_size)
    for key, tensor in tensors:
        writer.add(key, tensor)
    writer.close()
    (directory / CONFIG).write_text(json.dumps({"format_version": FORMAT_VERSION, **cfg.to_dict()}, indent=2))
    (directory / STATISTICS).write_text(json.dumps({k: s.to_json() for k, s in statistics.items()}, indent=2))
    (directory / PREPROCESSOR).write_text(json.dumps(normalization.to_preprocessor_config(), indent=2))
    tokenizer.save_pretrained(str(directory))
    return directory


def save_checkpoint(model: LaMP, directory: str | Path, tokenizer: PreTrainedTokenizerBase,
                    statistics: dict[str, ActionStats], max_shard_size: int | None = None) -> Path:
    directory = write_checkpoint(directory, model.cfg, model.base_state_dict().items(), tokenizer, statistics,
                                 model.vision_backbone.normalization, max_shard_size)
    if isinstance(model.language_model, PeftModel):
        model.language_model.peft_config["default"].save_pretrained(str(directory))
        adapter = get_peft_model_state_dict(model.language_model)
        save_file({k: v.detach().contiguous().cpu() for k, v in adapter.items()},
                  directory / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    return directory


# --- reading -------------------------------------------------------------------------------------------


def checkpoint_kind(directory: str | Path) -> str:
    """`MODEL_TYPE` (a lamp-bench checkpoint) or "openvla" (an OpenVLA folder in its HF layout), from
    config.json's model_type; anything else is a CheckpointError."""
    path = _require(_folder(directory), CONFIG)
    data = _read_json(path)
    kind = data.get("model_type") if isinstance(data, dict) else type(data).__name__
    if kind not in (MODEL_TYPE, OPENVLA_MODEL_TYPE):
        raise CheckpointError(f"{path}: model_type is {kind!r}, not {MODEL_TYPE!r} (a lamp-bench checkpoint) or "
                              f"{OPENVLA_MODEL_TYPE!r} (an OpenVLA checkpoint in its Hugging Face layout)")
    return kind


def checkpoint_hash(directory: str | Path) -> str:
    directory = Path(directory)
    adapter = [directory / ADAPTER_WEIGHTS] if (directory / ADAPTER_WEIGHTS).exists() else []
    return hash_files(Shards(directory).paths() + adapter)


def read_config(directory: str | Path) -> LaMPConfig:
    path = _require(Path(directory), CONFIG)
    data = _read_json(path)
    if not isinstance(data, dict) or data.get("model_type") != MODEL_TYPE:
        found = data.get("model_type") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: model_type is {found!r}, not {MODEL_TYPE!r}: not a lamp-bench checkpoint")
    version = data.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {version!r}; this lamp-bench reads version {FORMAT_VERSION}")
    try:
        return LaMPConfig.from_dict(data)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: invalid config: {e}") from e


def validate_checkpoint(directory: str | Path) -> LaMPConfig:
    """Check a checkpoint folder (either kind) without reading its tensors' data: every file present and
    parseable, the weights' names and shapes those of its config's model. Returns that config. Cheap
    (headers only; the model is built on the meta device), so commands call it before they start."""
    directory = _folder(directory)
    if checkpoint_kind(directory) == OPENVLA_MODEL_TYPE:
        from lamp_bench.models.openvla.hf_checkpoint import validate_openvla

        return validate_openvla(directory)
    cfg = read_config(directory)
    read_statistics(directory)
    read_image_normalization(directory)
    _require(directory, TOKENIZER)
    shards = Shards(directory)
    model = build_model(cfg, device="meta")
    try:
        model.load_base_state_dict({k: torch.empty(shards.shape(k), device="meta") for k in shards.files}, assign=True)
    except ValueError as e:
        raise CheckpointError(f"{shards.paths()[0]}: does not match {CONFIG}: {e}") from e
    if (directory / ADAPTER_CONFIG).exists() != (directory / ADAPTER_WEIGHTS).exists():
        missing = ADAPTER_WEIGHTS if (directory / ADAPTER_CONFIG).exists() else ADAPTER_CONFIG
        raise CheckpointError(f"checkpoint {directory} has no {missing}")
    return cfg


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu", merge_lora: bool = True) -> Checkpoint:
    """Build the checkpoint's model and load its weights (float32). merge_lora=True folds the adapter
    into the LLM (inference); False keeps it separate (resuming training). An OpenVLA HF folder is
    mapped in memory (openvla_hf.load_openvla)."""
    directory = _folder(directory)
    if checkpoint_kind(directory) == OPENVLA_MODEL_TYPE:
        from lamp_bench.models.openvla.hf_checkpoint import load_openvla

        return load_openvla(directory, device=device)
    cfg = read_config(directory)
    statistics = read_statistics(directory)
    normalization = read_image_normalization(directory)
    tokenizer_path = _require(directory, TOKENIZER)
    try:
        tokenizer = load_tokenizer(directory)
    except Exception as e:  # tokenizers raises its own exception types for malformed JSON
        raise CheckpointError(f"{tokenizer_path}: cannot load the tokenizer: {e}") from e
    shards = Shards(directory)
    model = load_weights(cfg, shards)
    model.vision_backbone.set_normalization(normalization)
    if (directory / ADAPTER_CONFIG).exists() or (directory / ADAPTER_WEIGHTS).exists():
        _load_adapter(model, directory)
        if merge_lora:
            model.merge_lora()
    return Checkpoint(model.to(device).eval(), tokenizer, statistics, directory, checkpoint_hash(directory))


def load_weights(cfg: LaMPConfig, shards: Shards) -> LaMP:
    """The model of `cfg` holding the shards' tensors, each cast to the model's dtype. Parameters are
    created empty and take the tensors directly, so peak memory is about one model copy."""
    from accelerate import init_empty_weights  # peft's dependency

    with init_empty_weights(include_buffers=False):  # parameters on "meta"; buffers (rotary, norms) real
        model = build_model(cfg)
    own = model.base_state_dict()
    state = {k: shards.get(k).to(own[k].dtype) if k in own else shards.get(k) for k in shards.files}
    try:
        model.load_base_state_dict(state, assign=True)
    except ValueError as e:
        raise CheckpointError(f"{shards.paths()[0]}: does not match {CONFIG}: {e}") from e
    left = [n for n, p in model.named_parameters() if p.is_meta]
    if left:
        raise RuntimeError(f"parameters not loaded from {shards.paths()[0].parent}: {left[:5]}")
    return model


def read_statistics(directory: Path) -> dict[str, ActionStats]:
    path = _require(directory, STATISTICS)
    data = _read_json(path)
    if not isinstance(data, dict) or not data:
        raise CheckpointError(f"{path}: expected an object mapping dataset keys to statistics")
    try:
        return {key: ActionStats.from_json(entry, f"{path} [{key}]") for key, entry in data.items()}
    except ValueError as e:
        raise CheckpointError(str(e)) from e


def read_image_normalization(directory: Path, error: type[CheckpointError] = CheckpointError) -> ImageNormalization:
    """From the folder's preprocessor_config.json when it has one, else the defaults."""
    path = Path(directory) / PREPROCESSOR
    if not path.is_file():
        return ImageNormalization()
    try:
        return ImageNormalization.from_preprocessor_config(_read_json(path, error))
    except ValueError as e:
        raise error(f"{path}: {e}") from e


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


def _folder(directory: str | Path) -> Path:
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint folder {directory} does not exist")
    return directory


def _require(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.is_file():
        raise CheckpointError(f"checkpoint {directory} has no {name}")
    return path


def _read_json(path: Path, error: type[CheckpointError] = CheckpointError) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: not valid JSON: {e}") from e


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises SafetensorError / OSError for truncated or forged files
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {e}") from e
