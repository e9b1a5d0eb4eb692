"""Frozen monocular depth estimators for the motion expert's 3D lifting, behind one interface:

    DepthEstimator(images (B, 3, H, W) float in [0, 1]) -> depth (B, H, W) float, metres

    source     transformers class                  published weights (folder of config.json + *.safetensors)
    "dav2"     DepthAnythingForDepthEstimation      depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf
    "midas"    DPTForDepthEstimation (MiDaS v3)     Intel/dpt-large, Intel/dpt-hybrid-midas
    "zoedepth" ZoeDepthForDepthEstimation           Intel/zoedepth-nyu-kitti
    "sim"      none: the simulator's metric depth (Observation.depth), see `resize_depth`

Each network runs at its own square `input_size` (rounded to the multiple it needs: 14 for
DepthAnything's DINOv2 patches, 32 for the DPT/BEiT fusion stages), far below the policy's image
size: the lifter only samples depth at patch centres, and the estimator must stay cheap next to the
motion pathway. The result is upsampled back to the input's resolution.

Metric depth. ZoeDepth and DepthAnything-V2's *metric* checkpoints (config depth_estimation_type
"metric") output metres. MiDaS (DPT) and DepthAnything's *relative* checkpoints output affine-invariant
inverse depth (disparity), which no per-image fit can turn into metres at test time (there is no
ground truth then). Such a folder must hold `depth_calibration.json` = {"disparity_scale": a,
"disparity_shift": b}, one affine map fitted once for the camera setup (`calibrate_from_demos` fits it
on demonstrations with the simulator's depth): depth = 1 / (a * disparity + b).

Weights are read from a local folder only: an explicit `weights` argument, else
$LAMP_BENCH_DEPTH_WEIGHTS/<source>, else ~/.cache/lamp-bench/depth/<source>. Only safetensors are
loaded, never remote code; every tensor must match the config exactly.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    DepthAnythingConfig,
    DepthAnythingForDepthEstimation,
    DPTConfig,
    DPTForDepthEstimation,
    PreTrainedConfig,
    PreTrainedModel,
    ZoeDepthConfig,
    ZoeDepthForDepthEstimation,
)

from lamp_bench.harness.config import ConfigError, home
from lamp_bench.harness.provenance import hash_files
from lamp_bench.models.lamp.config import DepthConfig

WEIGHTS_ENV = "LAMP_BENCH_DEPTH_WEIGHTS"
CALIBRATION = "depth_calibration.json"
PROCESSOR_CONFIG = "preprocessor_config.json"
STANDIN_FILE = "standin.json"  # beside weights fitted in place of the published ones (models.training.depth_fit)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


class DepthWeightsError(ConfigError):
    """A depth-weights folder that cannot be used; the message names the folder and what to do."""


@dataclass(frozen=True)
class Spec:
    model_type: str  # config.json's model_type
    model_class: type[PreTrainedModel]
    multiple: int  # input side must be a multiple of this
    mean: tuple[float, float, float]  # the published image processor's normalisation
    std: tuple[float, float, float]
    reflect_pad: bool  # ZoeDepth's processor pads by reflection before resizing (fewer edge artefacts)
    weights_hint: str  # a published checkpoint of this kind


SPECS = {
    "dav2": Spec("depth_anything", DepthAnythingForDepthEstimation, 14, IMAGENET_MEAN, IMAGENET_STD, False,
                 "depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf"),
    "midas": Spec("dpt", DPTForDepthEstimation, 32, HALF, HALF, False, "Intel/dpt-large"),
    "zoedepth": Spec("zoedepth", ZoeDepthForDepthEstimation, 32, HALF, HALF, True, "Intel/zoedepth-nyu-kitti"),
}


@dataclass(frozen=True)
class DisparityCalibration:
    """Affine map from a relative model's disparity to inverse metric depth."""

    scale: float
    shift: float
    # Disparities mapping to (near-)zero or negative inverse depth (sky, far walls) are clamped here.
    max_depth: float = 100.0

    def to_metres(self, disparity: torch.Tensor) -> torch.Tensor:
        return 1.0 / (self.scale * disparity + self.shift).clamp(min=1.0 / self.max_depth)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps({"disparity_scale": self.scale, "disparity_shift": self.shift,
                                    "max_depth": self.max_depth}, indent=2))
        return path

    @classmethod
    def load(cls, path: Path) -> DisparityCalibration:
        try:
            data = json.loads(path.read_text())
            calibration = cls(float(data["disparity_scale"]), float(data["disparity_shift"]),
                              float(data.get("max_depth", cls.max_depth)))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DepthWeightsError(
                f"{path}: needs numbers disparity_scale, disparity_shift (optional max_depth): {e}") from e
        if not all(map(math.isfinite, (calibration.scale, calibration.shift))) or calibration.max_depth <= 0:
            raise DepthWeightsError(f"{path}: calibration values must be finite and max_depth positive")
        return calibration


def fit_disparity_calibration(disparity: torch.Tensor, depth: torch.Tensor) -> DisparityCalibration:
    """Least-squares a, b with a * disparity + b ~ 1 / depth over pixels with valid depth (> 0, finite).
    Fitting in inverse depth is MiDaS's own alignment (its outputs are affine-invariant disparities)."""
    d, t = disparity.double().flatten(), depth.double().flatten()
    valid = torch.isfinite(t) & (t > 0) & torch.isfinite(d)
    if int(valid.sum()) < 2 or torch.std(d[valid]) == 0:
        raise ValueError("calibration needs at least two pixels with valid depth and varying disparity")
    design = torch.stack([d[valid], torch.ones_like(d[valid])], dim=1)  # (N, 2)
    a, b = torch.linalg.lstsq(design, (1.0 / t[valid])[:, None]).solution[:, 0].tolist()
    return DisparityCalibration(a, b, float(t[valid].max()) * 2.0)


class DepthEstimator(nn.Module):
    """A frozen depth network with its preprocessing and conversion to metres."""

    def __init__(
        self,
        source: str,
        net: PreTrainedModel,
        input_size: int,
        calibration: DisparityCalibration | None,
        mean: Sequence[float],
        std: Sequence[float],
        reflect_pad: bool,
        weights: Path | None = None,
    ):
        super().__init__()
        spec = SPECS[source]
        self.source = source
        self.net = net.eval().requires_grad_(False)
        self.size = spec.multiple * max(1, int(input_size / spec.multiple + 0.5))  # nearest, ties up
        self.calibration = calibration  # None: the network outputs metres
        self.reflect_pad = reflect_pad
        self.weights = weights
        self._weights_hash: str | None = None
        self._stand_in = stand_in_note(weights)  # read once: describe() runs for every job's provenance
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> DepthEstimator:
        # Frozen (the paper never updates it): stays in eval mode whatever its parent is switched to.
        return super().train(False)

    def describe(self) -> dict[str, Any]:
        """Identity for provenance: source, resolution, weights folder and hash (None: random init)."""
        if self._weights_hash is None and self.weights is not None:  # hashed once: files can be large
            self._weights_hash = hash_files(sorted(self.weights.glob("*.safetensors")))
        return {
            "source": self.source,
            "input_size": self.size,
            "weights": None if self.weights is None else str(self.weights),
            "weights_hash": self._weights_hash,
            "calibration": None if self.calibration is None else vars(self.calibration),
            "stand_in": self._stand_in,
        }

    def network_output(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1] -> the network's raw output (B, s', s') over the same field of
        view: metres for metric models, disparity for relative ones."""
        h, w = images.shape[-2:]
        x = images.float()
        pad_h = pad_w = 0
        if self.reflect_pad:  # ZoeDepth's processor rule, applied at the input's resolution
            pad_h, pad_w = int(math.sqrt(h / 2) * 3), int(math.sqrt(w / 2) * 3)
            x = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        out = self.net(pixel_values=(x - self.mean) / self.std).predicted_depth  # (B, s, s)
        if pad_h or pad_w:
            rows = round(pad_h * out.shape[-2] / (h + 2 * pad_h))
            cols = round(pad_w * out.shape[-1] / (w + 2 * pad_w))
            out = out[:, rows: out.shape[-2] - rows, cols: out.shape[-1] - cols]
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1] -> depth (B, H, W) metres."""
        out = self.network_output(images)
        depth = out if self.calibration is None else self.calibration.to_metres(out)
        return _upsample(depth, images.shape[-2:])


def _upsample(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B, h, w) -> (B, *size), bilinear."""
    if maps.shape[-2:] == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def resize_depth(depth: torch.Tensor | np.ndarray, size: int) -> torch.Tensor:
    """Simulator depth (B, H, W) metres -> (B, size, size), nearest neighbour: averaging across an
    object edge would invent depths between foreground and background."""
    depth = torch.as_tensor(depth, dtype=torch.float32)
    if depth.shape[-2:] == (size, size):
        return depth
    return F.interpolate(depth[:, None], size=(size, size), mode="nearest-exact")[:, 0]


# --- construction ------------------------------------------------------------------------------


def stand_in_note(folder: Path | None) -> str | None:
    """What a weights folder's `standin.json` says it is (models.training.depth_fit writes one next to
    weights fitted in place of the published ones); None for published or random weights."""
    note = None if folder is None else Path(folder) / STANDIN_FILE
    if note is None or not note.is_file():
        return None
    try:
        return str(json.loads(note.read_text()).get("what") or "a stand-in, not the published weights")
    except (OSError, ValueError):
        return "a stand-in, not the published weights (its standin.json is unreadable)"


def weights_folder(source: str, weights: str | os.PathLike | None = None) -> Path:
    """Where `source`'s weights are read from (see the module doc); not checked for existence."""
    if weights is not None:
        return Path(weights).expanduser()
    root = os.environ.get(WEIGHTS_ENV)
    return (Path(root).expanduser() if root else home() / "depth") / source


def build_depth_estimator(
    source: str | DepthConfig,
    weights: str | os.PathLike | None = None,
    input_size: int | None = None,
    random_init: bool = False,
    tiny: bool = False,
) -> DepthEstimator:
    """The frozen estimator of `source` (a name, or a DepthConfig giving source and input_size) from
    its weights folder. random_init=True needs no files: the published architecture (or a tiny one)
    with random weights, for timing (the same computation as trained weights) and plumbing tests;
    its depth means nothing."""
    if isinstance(source, DepthConfig):
        source, input_size = source.source, input_size or source.input_size
    if source == "sim":
        raise ConfigError("the 'sim' depth source has no network: use Observation.depth (resize_depth)")
    if source not in SPECS:
        raise ConfigError(f"unknown depth source {source!r}; known: {', '.join(SPECS)} and 'sim'")
    size = input_size or DepthConfig().input_size
    spec = SPECS[source]
    if random_init:
        net = spec.model_class(model_config(source, tiny))
        calibration = None if _is_metric(net) else DisparityCalibration(1.0, 1.0)  # any finite map: timing only
        return DepthEstimator(source, net, size, calibration, spec.mean, spec.std, spec.reflect_pad)
    folder = weights_folder(source, weights)
    net = _load_network(source, folder)
    calibration = _calibration(source, folder, net)
    mean, std, pad = _preprocessing(spec, folder)
    return DepthEstimator(source, net, size, calibration, mean, std, pad, weights=folder)


def model_config(source: str, tiny: bool = False) -> PreTrainedConfig:
    """The published architecture of `source` (DAv2-Small with its metric head, MiDaS v3 DPT-Large,
    ZoeDepth-NK's BEiT-L) or, with tiny=True, a few-layer one of the same kind (tests, tiny presets).
    The configs are strictly typed: ZoeDepth's max_depth must be an int."""
    if source == "dav2":
        if not tiny:  # the config defaults are Depth-Anything(-V2)-Small: 24.8M parameters
            return DepthAnythingConfig(depth_estimation_type="metric", max_depth=20)
        return DepthAnythingConfig(
            backbone_config={"model_type": "dinov2", "image_size": 56, "patch_size": 14, "hidden_size": 32,
                             "num_hidden_layers": 4, "num_attention_heads": 2, "out_indices": [1, 2, 3, 4],
                             "reshape_hidden_states": False},
            reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
            depth_estimation_type="metric", max_depth=20,
        )
    if source == "midas":
        if not tiny:
            return DPTConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                             backbone_out_indices=[5, 11, 17, 23], neck_hidden_sizes=[256, 512, 1024, 1024],
                             use_auxiliary_head=False)
        return DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=64,
                         patch_size=16, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 32, 32],
                         fusion_hidden_size=16, use_auxiliary_head=False)
    if source == "zoedepth":
        if not tiny:
            return ZoeDepthConfig()
        return ZoeDepthConfig(
            backbone_config={"model_type": "beit", "image_size": 64, "patch_size": 16, "num_hidden_layers": 4,
                             "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                             "use_relative_position_bias": True, "reshape_hidden_states": False,
                             "out_features": ["stage1", "stage2", "stage3", "stage4"]},
            neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, bottleneck_features=16, num_relative_features=8,
            bin_embedding_dim=16, bin_configurations=[{"n_bins": 8, "min_depth": 0.001, "max_depth": 10}],
        )
    raise ConfigError(f"unknown depth source {source!r}; known: {', '.join(SPECS)}")


def _load_network(source: str, folder: Path) -> PreTrainedModel:
    spec = SPECS[source]
    config_path = folder / "config.json"
    if not config_path.is_file():
        where = "" if folder.is_dir() else " (the folder does not exist)"
        raise DepthWeightsError(
            f"no {source} depth weights in {folder}{where}: put a transformers checkpoint there (config.json + "
            f"*.safetensors, e.g. {spec.weights_hint}), or name its folder with the policy's depth weights option, "
            f"or set ${WEIGHTS_ENV} to a folder holding a {source!r} subfolder"
        )
    try:
        model_type = json.loads(config_path.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as e:
        raise DepthWeightsError(f"{config_path}: not a JSON object: {e}") from e
    if model_type != spec.model_type:
        raise DepthWeightsError(
            f"{config_path}: model_type {model_type!r}, but depth source {source!r} needs a {spec.model_type!r} "
            f"checkpoint ({spec.model_class.__name__}, e.g. {spec.weights_hint})"
        )
    if not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.glob("*.bin"))
        raise DepthWeightsError(
            f"{folder}: no *.safetensors weights{f' (only {pickles}: pickles are never loaded)' if pickles else ''}; "
            "convert them to safetensors first"
        )
    try:
        net, info = spec.model_class.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True, trust_remote_code=False,
            output_loading_info=True, dtype=torch.float32,
            ignore_mismatched_sizes=True,  # so that mismatches come back in `info` and the error lists them
        )
    except Exception as e:  # safetensors / transformers raise many types for corrupt or mismatched files
        raise DepthWeightsError(f"{folder}: cannot load the {source} weights (corrupt, truncated, or not matching "
                                f"config.json?): {type(e).__name__}: {e}") from e
    problems = [f"{what}: {sorted(keys)[:5]}{' ...' if len(keys) > 5 else ''}"
                for what, keys in [("missing tensors", info["missing_keys"]),
                                   ("unexpected tensors", info["unexpected_keys"]),
                                   ("shape mismatches", [_mismatch(m) for m in info["mismatched_keys"]])] if keys]
    if problems or info.get("error_msgs"):
        raise DepthWeightsError(f"{folder}: weights do not match config.json: {'; '.join(problems)} "
                                f"{'; '.join(info.get('error_msgs') or [])}".strip())
    return net


def _mismatch(entry: Any) -> str:
    """transformers reports a mismatch as (key, checkpoint shape, model shape) (or just the key)."""
    if isinstance(entry, (tuple, list)) and len(entry) == 3:
        return f"{entry[0]} {tuple(entry[1])} vs config {tuple(entry[2])}"
    return str(entry)


def _is_metric(net: PreTrainedModel) -> bool:
    if isinstance(net, ZoeDepthForDepthEstimation):
        return True
    return getattr(net.config, "depth_estimation_type", "relative") == "metric"


def _calibration(source: str, folder: Path, net: PreTrainedModel) -> DisparityCalibration | None:
    path = folder / CALIBRATION
    if _is_metric(net):
        if path.exists():
            raise DepthWeightsError(f"{path}: this {source} checkpoint already outputs metres; remove the calibration")
        return None
    if not path.is_file():
        raise DepthWeightsError(
            f"{folder} holds a relative-depth {source} model (affine-invariant disparity), but lifting needs metres: "
            f"add {CALIBRATION} (fit it with lamp_bench.models.lamp.depth.calibrate_from_demos on demonstrations with "
            "simulator depth), or use a metric checkpoint"
            + (" (e.g. depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf)" if source == "dav2" else "")
        )
    return DisparityCalibration.load(path)


def _preprocessing(spec: Spec, folder: Path) -> tuple[Sequence[float], Sequence[float], bool]:
    """Normalisation (and ZoeDepth's padding) from the folder's processor config when it has one."""
    path = folder / PROCESSOR_CONFIG
    if not path.is_file():
        return spec.mean, spec.std, spec.reflect_pad
    try:
        data = json.loads(path.read_text())
        mean, std = data.get("image_mean", spec.mean), data.get("image_std", spec.std)
        mean, std = [float(v) for v in mean], [float(v) for v in std]
        pad = bool(data.get("do_pad", spec.reflect_pad)) if spec.reflect_pad else False
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise DepthWeightsError(f"{path}: unreadable image processor config: {e}") from e
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise DepthWeightsError(f"{path}: image_mean/image_std must be 3 values (std > 0)")
    return mean, std, pad


# --- calibration of relative models ------------------------------------------------------------


def calibrate_from_demos(
    source: str,
    weights: str | os.PathLike,
    demo_files: Sequence[str | os.PathLike],
    input_size: int | None = None,
    frames_per_demo: int = 4,
    max_demos: int = 8,
    save: bool = True,
) -> DisparityCalibration:
    """Fit (and by default save into the weights folder) the calibration of a relative model on
    third-person frames of demonstrations that carry the simulator's metric depth (lamp-bench's own)."""
    from lamp_bench.models.training.demos import DemoReader, inspect_demo_file

    folder = weights_folder(source, weights)
    net = _load_network(source, folder)
    if _is_metric(net):
        raise DepthWeightsError(f"{folder}: this {source} checkpoint outputs metres already; nothing to calibrate")
    mean, std, pad = _preprocessing(SPECS[source], folder)
    estimator = DepthEstimator(source, net, input_size or DepthConfig().input_size, None, mean, std, pad, folder)
    images, depths = [], []
    for path in demo_files:
        info = inspect_demo_file(path)
        if not info.has_depth or "third_person" not in info.cameras:
            raise ConfigError(f"{path}: no third-person metric depth (lamp-bench's demos with depth are needed)")
        reader = DemoReader(info)
        try:
            for d, steps in enumerate(info.lengths[:max_demos]):
                for t in np.linspace(0, steps - 1, frames_per_demo).round().astype(int):
                    images.append(torch.from_numpy(reader.rgb(d, int(t), "third_person")).permute(2, 0, 1))
                    depths.append(torch.from_numpy(reader.depth(d, int(t)).astype(np.float32)))
        finally:
            reader.close()
    image_batch = torch.stack(images).float() / 255.0  # (N, 3, S, S)
    with torch.no_grad():
        disparity = _upsample(estimator.network_output(image_batch), image_batch.shape[-2:])
    calibration = fit_disparity_calibration(disparity, torch.stack(depths))
    if save:
        calibration.save(folder / CALIBRATION)
    return calibration
