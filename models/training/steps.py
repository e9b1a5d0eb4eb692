"""The pieces of one optimizer step: the batch on its device, the shift augmentation, the two stages' losses, the
parameter groups each stage trains, the learning-rate schedule, and the resumable sample order."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from lamp_bench.models.lamp.model import Batch
from lamp_bench.models.training.dataset import patch_centres
from lamp_bench.models.training.setup import Run


def _depth(run: Run, batch: Batch) -> torch.Tensor:
    """(B, h, w) metres the model lifts with: the demonstration's, or the frozen estimator's."""
    if run.depth_estimator is None:
        return batch.depth
    size = run.model.cfg.motion.depth.input_size
    small = torch.nn.functional.interpolate(batch.images, size=(size, size), mode="bilinear", antialias=True,
                                            align_corners=False)
    with torch.no_grad():
        return run.depth_estimator(small)


def to_device(batch: Batch, device: torch.device) -> Batch:
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
