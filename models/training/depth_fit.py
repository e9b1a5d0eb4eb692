"""A CPU-scale stand-in for a published monocular depth estimator: the tiny architecture of a depth source
(`models.lamp.depth.model_config(source, tiny=True)`: DepthAnything's DINOv2 + DPT head, MiDaS's DPT,
ZoeDepth's BEiT) fitted to the simulator's metric depth in demonstrations, then saved in the published
transformers layout (config.json + model.safetensors), which `build_depth_estimator` loads like any
downloaded checkpoint.

Why: the depth-estimator ablation needs *an* estimator whose depth is imperfect, and the published
weights cannot be downloaded on an offline machine. A stand-in measures the pathway with estimated
depth at the scale of the tiny models; it is not DepthAnything-V2's accuracy, and `standin.json` in the
folder (its weights hash is in every episode's provenance) says so, with its validation error.

    python -m lamp_bench.models.training.depth_fit --demos DEMOS_FOLDER [...] --out FOLDER [--source dav2]
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.provenance import code_commit, hash_files
from lamp_bench.models.lamp.config import preset
from lamp_bench.models.lamp.depth import STANDIN_FILE, SPECS, DepthEstimator, model_config, resize_depth
from lamp_bench.models.training.demos import DemoReader, find_demo_files, inspect_demo_file

MIN_DEPTH = 1e-3  # metres; the log loss needs positive predictions and targets


def load_frames(data: Sequence[str | Path], every: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Third-person frames of every demonstration: images (N, 3, S, S) uint8, depth (N, S, S) metres,
    and each frame's demonstration number (N,) (held-out splits go by demonstration, not by frame)."""
    images, depths, demo_ids = [], [], []
    files = [p for root in data for p in find_demo_files(root)]
    if not files:
        raise ConfigError(f"no demonstration files (*.hdf5) under {', '.join(map(str, data))}")
    for path in files:
        info = inspect_demo_file(path)
        if not info.has_depth or "third_person" not in info.cameras:
            raise ConfigError(f"{path}: no third-person metric depth; collect demos with lamp-bench (they carry it)")
        reader = DemoReader(info)
        try:
            for d, steps in enumerate(info.lengths):
                frames = slice(0, steps, every)
                images.append(torch.from_numpy(reader.rgb(d, frames, "third_person")).permute(0, 3, 1, 2))
                depths.append(torch.from_numpy(reader.depth(d, frames).astype(np.float32)))
                demo_ids.append(torch.full((images[-1].shape[0],), len(demo_ids)))
        finally:
            reader.close()
    return torch.cat(images), torch.cat(depths), torch.cat(demo_ids)


def _log_l1(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean |log predicted - log target| over pixels with valid depth: scale errors count the same near
    and far, as they do for the lifted points' directions."""
    valid = torch.isfinite(target) & (target > MIN_DEPTH)
    return (predicted.clamp(min=MIN_DEPTH).log() - target.clamp(min=MIN_DEPTH).log()).abs()[valid].mean()


def _abs_rel(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """The standard depth metric: mean |predicted - target| / target over valid pixels."""
    valid = torch.isfinite(target) & (target > MIN_DEPTH)
    return float(((predicted - target).abs() / target)[valid].mean())


def fit_depth_standin(
    data: Sequence[str | Path],
    out: str | Path,
    source: str = "dav2",
    input_size: int | None = None,
    steps: int = 1500,
    batch_size: int = 32,
    lr: float = 1e-3,
    holdout: float = 0.1,
    seed: int = 0,
    log=print,
) -> dict[str, Any]:
    """Fit the tiny `source` architecture to the demonstrations' simulator depth and save it into `out`;
    returns (and writes to `out/standin.json`) what was fitted and its held-out error."""
    if source not in SPECS:
        raise ConfigError(f"unknown depth source {source!r}; known: {', '.join(SPECS)}")
    if not 0 < holdout < 1:
        raise ConfigError(f"holdout must be a fraction in (0, 1); got {holdout}")
    started = time.perf_counter()
    torch.manual_seed(seed)
    images, depths, demo_ids = load_frames(data)
    demos = int(demo_ids.max()) + 1
    held = torch.randperm(demos, generator=torch.Generator().manual_seed(seed))[:max(1, round(holdout * demos))]
    is_held = torch.isin(demo_ids, held)
    if bool(is_held.all()):
        raise ConfigError(f"{demos} demonstration(s): too few to hold some out for validation")
    spec = SPECS[source]
    net = spec.model_class(model_config(source, tiny=True))
    estimator = DepthEstimator(source, net, input_size or preset("tiny").motion.depth.input_size, None, spec.mean, spec.std,
                               spec.reflect_pad)
    estimator.net.requires_grad_(True)  # frozen where the policy uses it; trained here
    optimizer = torch.optim.AdamW(estimator.net.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.05)
    train_index = torch.nonzero(~is_held)[:, 0]
    size = estimator.size

    def predict(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out_maps = estimator.network_output(images[index].float() / 255.0)  # (B, s', s') metres
        return out_maps, resize_depth(depths[index], out_maps.shape[-1])

    for step in range(steps):
        batch = train_index[torch.randint(len(train_index), (batch_size,))]
        predicted, target = predict(batch)
        loss = _log_l1(predicted, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 250 == 0 or step == steps - 1:
            log(f"depth stand-in step {step + 1}/{steps}: log-L1 {loss.item():.4f}")
    with torch.no_grad():
        held_index = torch.nonzero(is_held)[:, 0]
        errors = [predict(chunk) for chunk in held_index.split(256)]
        abs_rel = float(np.average([_abs_rel(p, t) for p, t in errors], weights=[len(p) for p, _ in errors]))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    estimator.net.save_pretrained(out, safe_serialization=True)
    files = [p for root in data for p in find_demo_files(root)]
    summary = {
        "what": f"tiny {source} architecture fitted to simulator depth: a stand-in, NOT the published weights",
        "source": source, "input_size": size, "parameters": sum(p.numel() for p in estimator.net.parameters()),
        "data": {"demo_set_hash": hash_files(files), "files": [str(p) for p in files], "frames": len(images),
                 "demos": demos, "held_out_demos": sorted(held.tolist())},
        "fit": {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "final_log_l1": loss.item()},
        "held_out_abs_rel": round(abs_rel, 4),
        "weights_hash": hash_files(sorted(out.glob("*.safetensors"))),
        "code_commit": code_commit(),
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    (out / STANDIN_FILE).write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lamp_bench.models.training.depth_fit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--demos", nargs="+", required=True, help="demonstration files or folders (with depth)")
    parser.add_argument("--out", required=True, help="folder to write (config.json, model.safetensors, standin.json)")
    parser.add_argument("--source", default="dav2", choices=sorted(SPECS))
    parser.add_argument("--input-size", type=int, default=None, help="the estimator's input side (default: the tiny preset's)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        summary = fit_depth_standin(args.demos, args.out, args.source, args.input_size, args.steps,
                                    args.batch_size, seed=args.seed)
    except ConfigError as error:
        print(f"error: {error}")
        return 2
    print(json.dumps({k: summary[k] for k in ("source", "parameters", "held_out_abs_rel", "wall_time_s")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
