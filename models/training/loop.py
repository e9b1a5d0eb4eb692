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

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file
from torch.nn.attention import SDPBackend, sdpa_kernel

from lamp_bench.models.lamp.checkpoint import save_checkpoint
from lamp_bench.models.training.config import TrainConfig, validate
from lamp_bench.models.training.dataset import Collate
from lamp_bench.models.training.lineage import write_lineage
from lamp_bench.models.training.metrics import METRICS, Metrics, trim_after
from lamp_bench.models.training.setup import Run, prepare
from lamp_bench.models.training.state import mark_finished, read_state, save_state
from lamp_bench.models.training.steps import (
    StepSampler,
    lr_factor,
    parameter_groups,
    shift_augment,
    stage1_loss,
    stage2_loss,
    to_device,
)

TRAIN_CONFIG = "train_config.json"


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


def train(config: TrainConfig, on_step: Callable[[Run, str, int], None] | None = None) -> Path:
    """Train (or resume, or do nothing if finished) and return the checkpoint folder. `on_step(run, stage,
    step)` runs after every optimizer step (checkpoint selection evaluates intermediate weights there)."""
    out = Path(config.out)
    validate(config)
    resumed = read_state(out, config) if out.exists() else None
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
        trim_after(out / METRICS, start_stage, start_step)
    else:
        torch.manual_seed(config.seed)
    metrics = Metrics(out, fresh=resumed is None)
    try:
        for stage in run.stages[run.stages.index(start_stage):]:
            first = start_step if stage == start_stage else 0
            _run_stage(run, stage, first, trainer_state if stage == start_stage else None, metrics, on_step)
            trainer_state = None
    finally:
        metrics.close()
    run.model.eval()
    save_checkpoint(run.model, out, run.tokenizer, run.statistics)
    write_lineage(config, out)  # before the finished mark: a finished run always has its lineage
    mark_finished(out, config)
    return out


def _native_bf16(device: torch.device) -> bool:
    """bf16 matmuls run natively here (about twice as fast as fp32 on a 2-core AMX CPU, measured)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and (torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def attention_kernels(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """The attention kernel of training steps. On CPU, whole steps of the tiny preset ran 1.3-1.7x faster on the
    plain matmul-softmax path than with PyTorch's fused CPU kernel, although the fused kernel is faster timed
    alone (benchmarks/results/cpu_attention.json has both)."""
    choice = config.attention if config.attention != "auto" else ("math" if device.type == "cpu" else "fused")
    return sdpa_kernel([SDPBackend.MATH]) if choice == "math" else contextlib.nullcontext()


def _run_stage(run: Run, stage: str, first_step: int, trainer_state: dict[str, Any] | None, metrics: Metrics,
               on_step: Callable[[Run, str, int], None] | None = None) -> None:
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
                batch = to_device(next(batches), device)
                if config.augment_shift:  # seeded by position, so a resumed run draws the same shifts
                    seed = ((config.seed * 7919 + int(stage)) * 1_000_003 + step) * 1024 + micro
                    batch = shift_augment(batch, config.augment_shift, model.cfg.vision.patch_size,
                                          torch.Generator().manual_seed(seed))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16), attention_kernels(config, device):
                    out = loss_fn(run, batch)  # the kernel chosen here also runs the backward pass
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
                save_state(Path(config.out), run, stage, done, optimizer)
            if on_step is not None:
                on_step(run, stage, done)
    if checkpointing:
        for part in (model.llm, model.vision_backbone.featurizer, model.vision_backbone.fused_featurizer):
            part.activation_checkpointing_disable()
    next_stage = run.stages[run.stages.index(stage) + 1] if stage != run.stages[-1] else None
    if next_stage is not None:  # a kill between stages resumes at the next one
        save_state(Path(config.out), run, next_stage, 0, None)
