"""The LaMP trainer: stage 1 (motion expert alone on scene-flow labels) and stage 2 (the whole model,
L = L_action + lambda_FM * L_FM), writing a checkpoint folder that `lamp-bench run --checkpoint` loads.

Every trainable registry variant trains from the same command: the policy name picks the architecture
(`models.policies.VARIANTS[name].config(preset)`): `openvla` has no motion expert (stage 2 only),
`ungated` builds ungated bridges, `midas`/`zoedepth`/`dav2` lift with that frozen depth estimator,
`steps-K` computes the motion prior with K Euler steps; `no-motion` trains as `lamp` (it switches the
pathway off at inference).

Fine-tuning regime. Started from pretrained weights (`init_checkpoint`, e.g. converted OpenVLA), the
LLM is fine-tuned with LoRA (the preset's rank; r = 64 on q/k for openvla-7b) at `lora_lr` with the rest
of the backbone frozen, as the paper does. Started from scratch (the tiny/small presets: no weights can
be downloaded), LoRA on a random LLM would train nothing useful, so the whole model trains at `lr`.
The motion expert always trains in full at its own `motion_lr`.

Resumable: every `save_every` optimizer steps the full training state (weights, optimizer, RNG, data
position) is written atomically to `<out>/train_state/`; re-running the same command after a kill goes
on from the last saved step and gives the same result as an uninterrupted run (same data order and
noise). Metrics go to `<out>/metrics.csv` (and TensorBoard when it is installed).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lamp_bench.harness.config import ConfigError, tomllib
from lamp_bench.harness.registry import POLICIES, load_builtin_entries
from lamp_bench.models.action_tokenizer import ActionStats
from lamp_bench.models.checkpoint import load_checkpoint, save_checkpoint
from lamp_bench.models.config import BYTE_VOCAB, LaMPConfig, _build
from lamp_bench.models.config import preset as preset_config
from lamp_bench.models.dataset import (
    Collate,
    DemoDataset,
    SampleSpec,
    action_statistics,
    default_cache_dir,
    open_demo_files,
    patch_centres,
)
from lamp_bench.models.lamp import Batch, LaMP, build_model
from lamp_bench.models.scene_flow import FLOW_SOURCES
from lamp_bench.models.text_tokenizer import byte_level_tokenizer
from safetensors.torch import load_file, save_file

STAGES = ("1", "2", "both")
STATE_DIR = "train_state"
METRICS = "metrics.csv"
TRAIN_CONFIG = "train_config.json"
# Fields that may change between a run and its resumption without changing the result.
RESUME_FREE = {"out", "progress", "log_every", "save_every", "num_workers", "threads", "device"}


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
    flow_source: str = "sim"  # models.scene_flow.FLOW_SOURCES: "sim" | "icp"
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
    save_every: int = 250  # optimizer steps between resumable states
    log_every: int = 10
    num_workers: int = 0
    threads: int | None = None  # torch CPU threads (None: torch's default)
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------- config


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
    from lamp_bench.models.policies import VARIANTS

    load_builtin_entries()
    if config.policy not in VARIANTS:
        POLICIES.check(config.policy)  # unknown name: lists the known ones
        raise ConfigError(f"policy {config.policy!r} is not trained by lamp-bench; trainable policies: "
                          f"{', '.join(VARIANTS)}")
    if config.stage not in STAGES:
        raise ConfigError(f"stage must be one of {', '.join(STAGES)}; got {config.stage!r}")
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


# ---------------------------------------------------------------------------------------------- setup


@dataclass
class Run:
    """Everything a training run needs, built and checked before the first step."""

    config: TrainConfig
    model: LaMP
    tokenizer: Any
    dataset: DemoDataset
    statistics: dict[str, ActionStats]
    stages: list[str]
    device: torch.device
    depth_estimator: torch.nn.Module | None
    use_lora: bool


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _model_config(config: TrainConfig, base: LaMPConfig, from_checkpoint: bool) -> LaMPConfig:
    from lamp_bench.models.policies import VARIANTS

    return VARIANTS[config.policy].config(base, from_checkpoint=from_checkpoint)


def prepare(config: TrainConfig, saved_model_config: dict[str, Any] | None = None) -> Run:
    validate(config)
    device = _device(config.device)
    if config.init_checkpoint is not None:
        ckpt = load_checkpoint(config.init_checkpoint, merge_lora=False)
        cfg = _model_config(config, ckpt.config, from_checkpoint=True)
        if config.proprio is not None and config.proprio != cfg.proprio:
            raise ConfigError(f"proprio = {config.proprio} differs from the init checkpoint's architecture "
                              f"(proprio = {cfg.proprio}); leave it unset when starting from a checkpoint")
        model, tokenizer = ckpt.model, ckpt.tokenizer
    else:
        cfg = _model_config(config, preset_config(config.preset), from_checkpoint=False)
        if config.proprio is not None:
            cfg = cfg.replace(proprio=config.proprio)
        if cfg.llm.vocab_size != BYTE_VOCAB:
            raise ConfigError(f"preset {config.preset!r} needs a real tokenizer and weights: pass init_checkpoint "
                              "(a converted OpenVLA checkpoint) instead of training it from scratch")
        model, tokenizer = None, byte_level_tokenizer()
    stages = {"1": ["1"], "2": ["2"], "both": ["1", "2"]}[config.stage]
    if cfg.motion is None:
        if config.stage == "1":
            raise ConfigError(f"policy {config.policy!r} has no motion expert: stage 1 has nothing to train")
        stages = ["2"]
    stages = [s for s in stages if getattr(config, f"stage{s}_steps") > 0]
    if not stages:
        raise ConfigError("no training steps: set stage1_steps / stage2_steps")
    depth_estimator = None  # built first: missing weights are an error before labels are computed
    if cfg.motion is not None and cfg.motion.depth.source != "sim":
        from lamp_bench.models.depth import build_depth_estimator

        depth_estimator = build_depth_estimator(cfg.motion.depth).to(device).eval().requires_grad_(False)
    infos = open_demo_files(config.data)
    spec = SampleSpec(cfg.vision.image_size, cfg.vision.patch_size, motion=cfg.motion is not None,
                      proprio=cfg.proprio, flow_source=config.flow_source, flow_horizon=config.flow_horizon,
                      dense_flow=config.augment_shift > 0)
    statistics = action_statistics(infos)
    cache = Path(config.flow_cache) if config.flow_cache else default_cache_dir()
    dataset = DemoDataset(infos, spec, statistics, cache, progress=_label_progress if config.progress else None)
    if len(dataset) == 0:
        raise ConfigError("the demonstration files hold no steps")
    if saved_model_config is not None:
        cfg = LaMPConfig.from_dict(saved_model_config)  # resuming: exactly the model that was built
    elif model is None and cfg.motion is not None:
        scale = config.flow_scale or _auto_flow_scale(dataset.flow_q99())
        cfg = cfg.replace(motion=dataclasses.replace(cfg.motion, flow_scale=scale))
    if model is None or saved_model_config is not None:
        torch.manual_seed(config.seed)
        model = build_model(cfg)
    else:
        model.cfg = cfg  # the variant's inference settings (steps) on the checkpoint's weights
    use_lora = config.lora if config.lora is not None else config.init_checkpoint is not None
    return Run(config, model.to(device), tokenizer, dataset, statistics, stages, device, depth_estimator, use_lora)


def _auto_flow_scale(q99: float) -> float:
    """Scale bringing moving points' flow (mm per step) to about 1, the scale of sigma = 0.5 noise, instead of
    letting the noise swamp it; most points are static (zero flow), so the 99th percentile of the
    magnitudes measures the moving ones. Two significant digits."""
    if q99 <= 0:
        return 1.0
    return float(f"{1.0 / q99:.2g}")


def _label_progress(total: int):
    from rich.progress import Progress

    progress = Progress(transient=True)
    progress.start()
    task = progress.add_task("scene-flow labels", total=total)
    count = [0]

    def tick() -> None:
        progress.advance(task)
        count[0] += 1
        if count[0] >= total:
            progress.stop()

    return tick


# ---------------------------------------------------------------------------------------------- steps


def _depth(run: Run, batch: Batch) -> torch.Tensor:
    """(B, h, w) metres the model lifts with: the demonstration's, or the frozen estimator's."""
    if run.depth_estimator is None:
        return batch.depth
    size = run.model.cfg.motion.depth.input_size
    small = torch.nn.functional.interpolate(batch.images, size=(size, size), mode="bilinear", antialias=True,
                                            align_corners=False)
    with torch.no_grad():
        return run.depth_estimator(small)


def _to_device(batch: Batch, device: torch.device) -> Batch:
    move = lambda x: x.to(device, non_blocking=True) if isinstance(x, torch.Tensor) else x
    return Batch(**{f.name: move(getattr(batch, f.name)) for f in dataclasses.fields(Batch)})


def shift_augment(batch: Batch, max_shift: int, patch_size: int, generator: torch.Generator) -> Batch:
    """Translate every image by a random (dx, dy) in [-max_shift, max_shift] pixels (edge pixels
    replicated), and its depth map, intrinsics (cx += dx, cy += dy) and flow labels with it, so that each
    lifted patch point still is the scene point its features see. Flow comes per pixel (dense labels)
    and is resampled at the shifted patch centres -> (B, Np, 3)."""
    b, _, size, _ = batch.images.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (b, 2), generator=generator)  # (dx, dy) per sample

    def move(x: torch.Tensor) -> torch.Tensor:  # (B, C, S, S)
        padded = F.pad(x, (max_shift,) * 4, mode="replicate")
        return torch.stack([padded[i, :, max_shift - dy: max_shift - dy + size, max_shift - dx: max_shift - dx + size]
                            for i, (dx, dy) in enumerate(shifts.tolist())])

    out = dataclasses.replace(batch, images=move(batch.images))
    if batch.depth is not None:
        intrinsics = batch.intrinsics.clone()
        intrinsics[:, :2, 2] += shifts.to(intrinsics)
        # The scene point at a patch centre c of the shifted image was at c - shift in the original.
        centres = torch.as_tensor(patch_centres(size, patch_size), dtype=torch.float32)  # (Np, 2)
        where = centres[None] - shifts[:, None].float()  # (B, Np, 2)
        grid = ((where + 0.5) / size * 2 - 1)[:, None]  # (B, 1, Np, 2), align_corners=False coordinates
        dense = batch.flow.view(b, size, size, 3).permute(0, 3, 1, 2)  # (B, 3, S, S)
        flow = F.grid_sample(dense, grid.to(dense), mode="bilinear", padding_mode="border", align_corners=False)
        out = dataclasses.replace(out, depth=move(batch.depth[:, None])[:, 0], intrinsics=intrinsics,
                                  flow=flow[:, :, 0].transpose(1, 2))
    return out


def stage1_loss(run: Run, batch: Batch) -> dict[str, torch.Tensor]:
    """Motion expert alone: OT-CFM loss on the flow labels, vision and text features frozen."""
    model = run.model
    with torch.no_grad():
        features = model.vision_backbone(batch.images)
        text = model.embed_instructions(batch.instruction_ids)
        points = model.lift(_depth(run, batch), batch.intrinsics)
    c = model.motion_expert.context(features, points, text)
    fm = model.motion_expert.loss(c, batch.flow)
    return {"loss": fm, "fm_loss": fm}


def stage2_loss(run: Run, batch: Batch) -> dict[str, torch.Tensor]:
    if run.model.motion_expert is not None:
        batch = dataclasses.replace(batch, depth=_depth(run, batch))
    out = run.model(batch)
    loss = out["action_loss"]
    if "fm_loss" in out:
        loss = loss + run.config.lambda_fm * out["fm_loss"]
    tokenizer = run.model.action_tokenizer
    predicted = out["action_logits"].argmax(-1)  # (B, 7) token ids
    targets = torch.as_tensor(tokenizer.encode(batch.actions.cpu().numpy()), device=loss.device)
    # Mean |decoded - target| in normalised units: how far off the actions are, which token accuracy
    # (exact bin out of 256) does not say.
    error = torch.as_tensor(tokenizer.decode(predicted) - batch.actions.clamp(-1, 1).cpu().numpy()).abs().mean()
    metrics = {"loss": loss, "action_loss": out["action_loss"], "action_accuracy": (predicted == targets).float().mean(),
               "action_l1": error}
    if "fm_loss" in out:
        metrics["fm_loss"] = out["fm_loss"]
    return metrics


def parameter_groups(run: Run, stage: str) -> list[dict[str, Any]]:
    """Optimizer groups of a stage; everything else is frozen."""
    config, model = run.config, run.model
    if stage == "2" and run.use_lora:
        model.add_lora()
    groups = model.parameter_groups()
    if stage == "1":
        plan = {"motion": config.motion_lr}
    elif run.use_lora:
        plan = {"lora": config.lora_lr, "bridge": config.lora_lr, "motion": config.motion_lr}
    else:
        plan = {"backbone": config.lr, "bridge": config.lr, "motion": config.motion_lr}
    for p in model.parameters():
        p.requires_grad_(False)
    out = []
    for name, lr in plan.items():
        params = groups[name]
        for p in params:
            p.requires_grad_(True)
        if params:
            out.append({"params": params, "lr": lr, "base_lr": lr, "name": name})
    # The LLM's input embedding table is also the motion expert's instruction encoder; it is part of
    # "backbone" and trains only when the backbone does.
    return out


def lr_factor(step: int, total: int, warmup: int, floor: float) -> float:
    """Linear warm-up, then cosine decay to `floor`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class StepSampler(torch.utils.data.Sampler):
    """An endless stream of seeded permutations of the dataset, starting at a given sample position, so
    a resumed run sees exactly the samples an uninterrupted one would."""

    def __init__(self, size: int, seed: int, start: int):
        self.size, self.seed, self.start = size, seed, start

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self.start, self.size)
        while True:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
            yield from order[offset:].tolist()
            epoch, offset = epoch + 1, 0


# ---------------------------------------------------------------------------------------------- state


def _save_state(out: Path, run: Run, stage: str, step: int, optimizer: torch.optim.Optimizer | None) -> None:
    """Write the resumable state to a fresh folder, then swap it in (a kill leaves the old one)."""
    final, tmp, old = out / STATE_DIR, out / f"{STATE_DIR}.tmp", out / f"{STATE_DIR}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in run.model.state_dict().items()}, tmp / "model.safetensors")
    torch.save({"optimizer": optimizer.state_dict() if optimizer is not None else None,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}, tmp / "trainer.pt")
    (tmp / "state.json").write_text(json.dumps({
        "stage": stage, "step": step, "finished": False, "lora": isinstance_peft(run.model),
        "train_config": _resume_identity(run.config), "model_config": run.model.cfg.to_dict(),
    }, indent=1))
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _mark_finished(out: Path, config: TrainConfig) -> None:
    """The checkpoint is written: keep only a marker (a re-run then does nothing), not the weights twice."""
    tmp = out / f"{STATE_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    (tmp / "state.json").write_text(json.dumps({"finished": True, "train_config": _resume_identity(config)}, indent=1))
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)
    tmp.rename(out / STATE_DIR)


def isinstance_peft(model: LaMP) -> bool:
    from peft import PeftModel

    return isinstance(model.language_model, PeftModel)


def _resume_identity(config: TrainConfig) -> dict[str, Any]:
    """The settings a resumed run must share with the saved one, as JSON values (tuples become lists)."""
    return json.loads(json.dumps({k: v for k, v in config.to_dict().items() if k not in RESUME_FREE}))


def _find_state(out: Path) -> Path | None:
    for name in (STATE_DIR, f"{STATE_DIR}.old"):  # .old: killed between the two renames
        if (out / name / "state.json").is_file():
            return out / name
    return None


def _read_state(out: Path, config: TrainConfig) -> tuple[Path, dict[str, Any]] | None:
    folder = _find_state(out)
    if folder is None:
        return None
    state = json.loads((folder / "state.json").read_text())
    previous = state["train_config"]
    now = _resume_identity(config)
    changed = sorted(k for k in set(previous) | set(now) if previous.get(k) != now.get(k))
    if changed:
        raise ConfigError(f"{out} holds a training run with different settings ({', '.join(changed)}); "
                          "use another --out folder, or the same settings to resume it")
    return folder, state


# ---------------------------------------------------------------------------------------------- loop


class Metrics:
    """metrics.csv (appended across resumptions) and TensorBoard when installed."""

    FIELDS = ("stage", "step", "loss", "action_loss", "fm_loss", "action_accuracy", "action_l1", "lr",
              "samples_per_s", "elapsed_s")

    def __init__(self, out: Path, fresh: bool):
        self.path = out / METRICS
        new = fresh or not self.path.exists()
        self.file = open(self.path, "w" if new else "a", newline="")  # noqa: SIM115 (closed by close())
        self.writer = csv.DictWriter(self.file, fieldnames=self.FIELDS)
        if new:
            self.writer.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            self.tb = None

    def log(self, row: dict[str, Any]) -> None:
        self.writer.writerow({k: row.get(k, "") for k in self.FIELDS})
        self.file.flush()
        if self.tb is not None:
            for key in ("loss", "action_loss", "fm_loss", "action_accuracy", "action_l1", "lr", "samples_per_s"):
                if row.get(key, "") != "":
                    self.tb.add_scalar(f"stage{row['stage']}/{key}", row[key], row["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def _trim_after(path: Path, stage: str, step: int) -> None:
    """Drop metric rows logged after the state we resume from (they will be logged again)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    order = {"1": 0, "2": 1}
    keep = [r for r in rows if (order[r["stage"]], int(r["step"])) <= (order[stage], step)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=Metrics.FIELDS)
        writer.writeheader()
        writer.writerows(keep)


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[status]}"), disable=not enabled, transient=False)


def train(config: TrainConfig) -> Path:
    """Train (or resume, or do nothing if finished) and return the checkpoint folder."""
    out = Path(config.out)
    validate(config)
    resumed = _read_state(out, config) if out.exists() else None
    if resumed is not None and resumed[1]["finished"]:
        return out
    if config.threads:
        torch.set_num_threads(config.threads)
    run = prepare(config, saved_model_config=resumed[1]["model_config"] if resumed else None)
    out.mkdir(parents=True, exist_ok=True)
    (out / TRAIN_CONFIG).write_text(json.dumps(config.to_dict(), indent=1))
    start_stage, start_step, trainer_state = run.stages[0], 0, None
    if resumed is not None:
        folder, state = resumed
        start_stage, start_step = state["stage"], state["step"]
        if state["lora"]:
            run.model.add_lora()
        run.model.load_state_dict(load_file(str(folder / "model.safetensors")))
        trainer_state = torch.load(folder / "trainer.pt", weights_only=True)
        torch.set_rng_state(trainer_state["torch_rng"])
        if trainer_state["cuda_rng"]:
            torch.cuda.set_rng_state_all(trainer_state["cuda_rng"])
        _trim_after(out / METRICS, start_stage, start_step)
    else:
        torch.manual_seed(config.seed)
    metrics = Metrics(out, fresh=resumed is None)
    try:
        for stage in run.stages[run.stages.index(start_stage):]:
            first = start_step if stage == start_stage else 0
            _run_stage(run, stage, first, trainer_state if stage == start_stage else None, metrics)
            trainer_state = None
    finally:
        metrics.close()
    run.model.eval()
    save_checkpoint(run.model, out, run.tokenizer, run.statistics)
    _mark_finished(out, config)
    return out


def _native_bf16(device: torch.device) -> bool:
    """bf16 matmuls run natively here (about twice as fast as fp32 on a 2-core AMX CPU, measured)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and (torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def _run_stage(run: Run, stage: str, first_step: int, trainer_state: dict[str, Any] | None, metrics: Metrics) -> None:
    config, model, device = run.config, run.model, run.device
    total = getattr(config, f"stage{stage}_steps")
    groups = parameter_groups(run, stage)
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    if trainer_state is not None and trainer_state["optimizer"] is not None:
        optimizer.load_state_dict(trainer_state["optimizer"])
    on_gpu = device.type == "cuda"
    bf16 = config.bf16 if config.bf16 is not None else _native_bf16(device)
    checkpointing = config.activation_checkpointing if config.activation_checkpointing is not None else on_gpu
    if checkpointing:
        for part in (model.llm, model.vision_backbone.featurizer, model.vision_backbone.fused_featurizer):
            part.activation_checkpointing_enable()
    per_step = config.batch_size * config.grad_accum
    # Stage 2 sees the data in a different order from stage 1 (seed offset), both reproducibly.
    sampler = StepSampler(len(run.dataset), config.seed + (0 if stage == "1" else 1), first_step * per_step)
    loader = torch.utils.data.DataLoader(run.dataset, batch_size=config.batch_size, sampler=sampler,
                                         collate_fn=Collate(run.tokenizer, model.cfg.llm),
                                         num_workers=config.num_workers, persistent_workers=config.num_workers > 0,
                                         # its own generator: drawing worker seeds from the global RNG would
                                         # shift the model's noise stream after a resume
                                         generator=torch.Generator().manual_seed(config.seed))
    batches = iter(loader)
    loss_fn = stage1_loss if stage == "1" else stage2_loss
    model.train()
    started, window_start, window_samples = time.perf_counter(), time.perf_counter(), 0
    sums: dict[str, float] = {}
    count = 0
    with _progress(config.progress) as progress:
        bar = progress.add_task(f"stage {stage}", total=total, completed=first_step, status="")
        for step in range(first_step, total):
            factor = lr_factor(step, total, round(config.warmup * total), config.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            optimizer.zero_grad(set_to_none=True)
            for micro in range(config.grad_accum):
                batch = _to_device(next(batches), device)
                if config.augment_shift:  # seeded by position, so a resumed run draws the same shifts
                    seed = ((config.seed * 7919 + int(stage)) * 1_000_003 + step) * 1024 + micro
                    batch = shift_augment(batch, config.augment_shift, model.cfg.vision.patch_size,
                                          torch.Generator().manual_seed(seed))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    out = loss_fn(run, batch)
                (out["loss"] / config.grad_accum).backward()
                for key, value in out.items():
                    sums[key] = sums.get(key, 0.0) + float(value.detach()) / config.grad_accum
            params = [p for g in groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            count += 1
            window_samples += per_step
            done = step + 1
            if done % config.log_every == 0 or done == total:
                now = time.perf_counter()
                row = {"stage": stage, "step": done, **{k: round(v / count, 5) for k, v in sums.items()},
                       "lr": optimizer.param_groups[0]["lr"],
                       "samples_per_s": round(window_samples / max(now - window_start, 1e-9), 2),
                       "elapsed_s": round(now - started, 1)}
                metrics.log(row)
                progress.update(bar, status=f"loss {row['loss']:.4f}  {row['samples_per_s']:.1f} samples/s")
                sums, count, window_start, window_samples = {}, 0, now, 0
            progress.update(bar, completed=done)
            if done % config.save_every == 0 and done < total:
                _save_state(Path(config.out), run, stage, done, optimizer)
    if checkpointing:
        for part in (model.llm, model.vision_backbone.featurizer, model.vision_backbone.fused_featurizer):
            part.activation_checkpointing_disable()
    next_stage = run.stages[run.stages.index(stage) + 1] if stage != run.stages[-1] else None
    if next_stage is not None:  # a kill between stages resumes at the next one
        _save_state(Path(config.out), run, next_stage, 0, None)
