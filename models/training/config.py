"""The training configuration: `TrainConfig`, read from a TOML/JSON file and the command line
(`build_train_config`), and checked before anything heavy happens (`validate`)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lamp_bench.harness.config import ConfigError, tomllib
from lamp_bench.harness.registry import POLICIES, load_builtin_entries
from lamp_bench.models.lamp.config import _build
from lamp_bench.models.lamp.config import preset as preset_config
from lamp_bench.models.training.scene_flow import FLOW_SOURCES

STAGES = ("1", "2", "both")
ATTENTION_KERNELS = ("auto", "fused", "math")
# Fields that may change between a run and its resumption without changing the result (beyond float rounding).
RESUME_FREE = {"out", "progress", "log_every", "save_every", "num_workers", "threads", "device", "attention"}


@dataclass(frozen=True)
class TrainConfig:
    data: tuple[str, ...]  # demonstration files or folders (LIBERO HDF5 layout)
    out: str  # checkpoint folder written at the end
    policy: str = "lamp"  # registry variant whose architecture is trained
    preset: str = "tiny"  # model size when training from scratch
    proprio: bool | None = None  # proprioception token (LaMPConfig.proprio); None: the preset's (from scratch only)
    init_checkpoint: str | None = None  # start from these weights (a lamp-bench checkpoint folder)
    stage: str = "both"  # "1": motion expert alone, "2": full model, "both": 1 then 2
    # scene-flow labels
    flow_source: str = "sim"  # models.training.scene_flow.FLOW_SOURCES: "sim" | "icp"
    flow_horizon: int = 1  # label = displacement from step t to t + horizon
    flow_scale: float | None = None  # flow-matching target scale; None: 1 / q99 of label magnitudes (fresh models)
    flow_cache: str | None = None  # folder for cached labels (default: lamp-bench home)
    augment_shift: int = 0  # random image translation of up to this many pixels (DrQ-style; 0 = off)
    # optimisation
    batch_size: int = 32  # samples per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    stage1_steps: int = 300
    stage2_steps: int = 3000
    motion_lr: float = 5e-4  # motion expert, both stages
    lr: float = 3e-4  # stage 2 from scratch: vision, projector, LLM, bridges
    lora: bool | None = None  # None: LoRA exactly when starting from init_checkpoint
    lora_lr: float = 1e-4  # stage 2 with LoRA: adapters and bridges
    lambda_fm: float = 0.1
    weight_decay: float = 0.01
    warmup: float = 0.05  # fraction of each stage's steps with a linear learning-rate warm-up
    min_lr_ratio: float = 0.1  # cosine decay to this fraction of each learning rate
    grad_clip: float = 1.0
    seed: int = 0
    # machinery
    device: str = "auto"  # "auto": cuda when available
    bf16: bool | None = None  # bf16 autocast; None: on GPU, and on CPUs with native bf16 (AMX/AVX512-BF16)
    activation_checkpointing: bool | None = None  # None: on GPU only
    # attention kernel: "auto" = "math" on CPU (faster whole training steps: benchmarks/cpu_attention.py),
    # PyTorch's own choice on GPU; "fused" or "math" force one
    attention: str = "auto"
    save_every: int = 250  # optimizer steps between resumable states
    log_every: int = 10
    num_workers: int = 0
    threads: int | None = None  # torch CPU threads (None: torch's default)
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"training config {path} does not exist")
    try:
        if path.suffix == ".toml":
            return tomllib.loads(path.read_text())
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ConfigError(f"{path}: expected a JSON object of training options")
            return data
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot parse: {error}") from None
    raise ConfigError(f"training config {path} must be a .toml or .json file")


def build_train_config(config_file: str | Path | None = None, *, preset: str | None = None,
                       data: list[str] | None = None, stage: str | None = None, out: str | Path | None = None,
                       policy: str | None = None, **overrides: Any) -> TrainConfig:
    """`--config FILE` and/or `--preset P --data DIR`, then `--stage`, `--out`, `--policy`: options given on
    the command line override the file. Unknown keys and wrong types are errors naming the key."""
    values: dict[str, Any] = read_config_file(config_file) if config_file is not None else {}
    where = str(config_file) if config_file is not None else "training options"
    explicit = {"preset": preset, "data": data, "stage": stage, "out": None if out is None else str(out),
                "policy": policy, **overrides}
    values.update({k: v for k, v in explicit.items() if v is not None})
    if isinstance(values.get("data"), (str, Path)):
        values["data"] = [str(values["data"])]
    if "data" in values:
        values["data"] = [str(p) for p in values["data"]]
    if "stage" in values:
        values["stage"] = str(values["stage"])
    for key, what in (("data", "--data DIR (or `data` in the config file)"),
                      ("out", "--out CKPT_DIR (or `out` in the config file)")):
        if not values.get(key):
            raise ConfigError(f"training needs {what}")
    try:
        config = _build(TrainConfig, values, where)
    except (ValueError, TypeError) as error:
        raise ConfigError(str(error)) from None
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    """Name problems before anything heavy happens."""
    from lamp_bench.models.lamp.policies import VARIANTS

    load_builtin_entries()
    if config.policy not in VARIANTS:
        POLICIES.check(config.policy)  # unknown name: lists the known ones
        raise ConfigError(f"policy {config.policy!r} is not trained by lamp-bench; trainable policies: "
                          f"{', '.join(VARIANTS)}")
    if config.stage not in STAGES:
        raise ConfigError(f"stage must be one of {', '.join(STAGES)}; got {config.stage!r}")
    if config.attention not in ATTENTION_KERNELS:
        raise ConfigError(f"attention must be one of {', '.join(ATTENTION_KERNELS)}; got {config.attention!r}")
    FLOW_SOURCES.check(config.flow_source)
    if config.init_checkpoint is None:
        preset_config(config.preset)  # unknown presets raise with the known names
    for name in ("batch_size", "grad_accum", "flow_horizon", "save_every", "log_every"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be >= 1; got {getattr(config, name)}")
    for name in ("stage1_steps", "stage2_steps", "augment_shift"):
        if getattr(config, name) < 0:
            raise ConfigError(f"{name} must be >= 0; got {getattr(config, name)}")
    if not 0 <= config.warmup < 1:
        raise ConfigError(f"warmup is a fraction of each stage's steps in [0, 1); got {config.warmup}")
