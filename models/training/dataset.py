"""Demonstration files (ours or official LIBERO) -> training samples for the LaMP family.

A sample is one step t of one demonstration: the third-person image at the model's size, the
instruction, the action normalised with its dataset's q01/q99 statistics (and the proprioception, for
models with a proprioception token, normalised likewise), and -- for models with a
motion expert -- the depth map and intrinsics the model lifts its patch centres with, plus the scene
flow of those patch-centre points from t to t + horizon (the motion expert's target).

Flow labels are computed once per (file, source, horizon, patch grid) and cached as .npy files under
lamp-bench's home folder, since every trained variant reuses them and ICP is not free.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lamp_bench.harness import config as harness_config
from lamp_bench.models.lamp.action_tokenizer import GRIPPER_CANONICAL, ActionStats
from lamp_bench.models.training.demos import DemoFileError, DemoFileInfo, DemoReader, find_demo_files, inspect_demo_file
from lamp_bench.models.lamp.model import Batch
from lamp_bench.models.training.scene_flow import FLOW_SOURCES, FlowFrame, flow_labels
from PIL import Image

CAMERA = "third_person"  # the camera LaMP policies see (models.policies.CAMERA)
ARM_DIMS = 6  # normalised with q01/q99; the gripper (-1 open / +1 close) stays as it is


@dataclass(frozen=True)
class SampleSpec:
    """What the model needs from each sample."""

    image_size: int
    patch_size: int
    motion: bool  # depth, intrinsics and flow targets
    proprio: bool = False  # normalised end-effector position and gripper joints
    flow_source: str = "sim"
    flow_horizon: int = 1
    dense_flow: bool = False  # labels at every pixel (for shift augmentation), else at the patch centres

    @property
    def label_cell(self) -> int:
        """Side in pixels of the cells whose centres carry flow labels."""
        return 1 if self.dense_flow else self.patch_size


def open_demo_files(paths: Sequence[str | Path]) -> list[DemoFileInfo]:
    """Every demonstration file under the given files/folders, checked; errors before any training."""
    files: list[Path] = []
    for path in paths:
        found = find_demo_files(path)
        if not found:
            raise DemoFileError(f"no *.hdf5 demonstration files under {path} (collect some with `lamp-bench demos`)")
        files += found
    if not files:
        raise DemoFileError("no demonstration files given")
    return [inspect_demo_file(f) for f in files]


def check_files(infos: list[DemoFileInfo], spec: SampleSpec) -> None:
    for info in infos:
        if CAMERA not in info.cameras:
            raise DemoFileError(f"{info.path}: no third-person images (obs/agentview_rgb), which LaMP policies see")
        if spec.proprio and not info.has_proprio:
            raise DemoFileError(f"{info.path}: no proprioception (obs/ee_pos and obs/gripper_states), which this "
                                "model's proprioception token needs")
        if not spec.motion:
            continue
        if not info.has_depth:
            raise DemoFileError(
                f"{info.path}: no metric depth with camera intrinsics, which a motion expert needs for lifting and "
                "flow labels (official LIBERO files have none): train policy 'openvla', or collect demonstrations "
                "with `lamp-bench demos`")
        if spec.flow_source == "sim" and not (info.has_segmentation and info.has_body_poses):
            raise DemoFileError(f"{info.path}: flow source 'sim' needs segmentation and body poses in the file; "
                                "use flow source 'icp'")


def action_statistics(infos: list[DemoFileInfo]) -> dict[str, ActionStats]:
    """q01/q99 of every action dimension, per dataset key; the gripper dimension is not normalised.
    Proprioception q01/q99 too, where every file of the key has it."""
    quantiles = lambda chunks: tuple(np.quantile(np.concatenate(chunks), [0.01, 0.99], axis=0))  # q01, q99
    stats = {}
    for key in dict.fromkeys(info.dataset for info in infos):
        mine = [info for info in infos if info.dataset == key]
        readers = [DemoReader(info) for info in mine]
        actions = [r.actions(d) for r, info in zip(readers, mine) for d in range(len(info.demos))]
        proprio = (None, None)
        if all(info.has_proprio for info in mine):
            proprio = quantiles([r.proprio(d) for r, info in zip(readers, mine) for d in range(len(info.demos))])
        for reader in readers:
            reader.close()
        mask = np.array([True] * ARM_DIMS + [False] * (actions[0].shape[1] - ARM_DIMS))
        stats[key] = ActionStats(*quantiles(actions), mask, GRIPPER_CANONICAL, *proprio)
    return stats


def patch_centres(image_size: int, patch_size: int) -> np.ndarray:
    """(Np, 2) pixel coordinates (u, v) of the patch centres, row-major as PointLifter orders them."""
    grid = image_size // patch_size
    centres = (np.arange(grid) + 0.5) * patch_size - 0.5
    v, u = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([u.ravel(), v.ravel()], axis=1)


def rescale_intrinsics(k: np.ndarray, scale: float) -> np.ndarray:
    """Intrinsics of the image resized by `scale` (pixel centres at integer coordinates)."""
    out = np.array(k, dtype=np.float64, copy=True)
    out[..., 0, 0] *= scale
    out[..., 1, 1] *= scale
    out[..., :2, 2] = (out[..., :2, 2] + 0.5) * scale - 0.5
    return out


def _cache_key(info: DemoFileInfo, spec: SampleSpec) -> str:
    stat = info.path.stat()
    ident = json.dumps([str(info.path.resolve()), stat.st_size, stat.st_mtime_ns, spec.flow_source, spec.flow_horizon,
                        spec.image_size, spec.label_cell])
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


def file_flow_labels(info: DemoFileInfo, spec: SampleSpec, cache_dir: Path | None,
                     on_step: Callable[[], None] = lambda: None) -> list[np.ndarray]:
    """Per demo, (T, N, 3) flow of the label points (patch centres, or every pixel: N = S^2, kept as
    float16) from t to t + horizon (the last steps use the final frame; the final step's flow is zero)."""
    path = cache_dir / f"{_cache_key(info, spec)}.npz" if cache_dir is not None else None
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as cached:
            labels = [cached[f"demo{d}"] for d in range(len(info.demos))]
        for n in info.lengths:
            for _ in range(n):
                on_step()
        return labels
    reader = DemoReader(info)
    labels = []
    for d in range(len(info.demos)):
        depth = reader.depth(d, slice(None)).astype(np.float64)
        seg = reader.segmentation(d, slice(None)) if info.has_segmentation else None
        poses = reader.body_poses(d) if info.has_body_poses else None
        intrinsics, extrinsics = reader.camera(d)
        scale = depth.shape[1] / spec.image_size  # model pixels -> stored pixels
        uv = (patch_centres(spec.image_size, spec.label_cell) + 0.5) * scale - 0.5

        frames = [FlowFrame(depth[t], intrinsics[t], extrinsics[t], None if seg is None else seg[t],
                            None if poses is None else poses[t]) for t in range(len(depth))]
        n = len(frames)
        out = np.zeros((n, len(uv), 3), dtype=np.float16 if spec.dense_flow else np.float32)
        for t in range(n):
            later = min(t + spec.flow_horizon, n - 1)
            if later > t:
                out[t] = flow_labels(spec.flow_source, frames[t], frames[later], uv)
            on_step()
        labels.append(out)
    reader.close()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **{f"demo{d}": a for d, a in enumerate(labels)})
        tmp.replace(path)
    return labels


def default_cache_dir() -> Path:
    return harness_config.home() / "flow-labels"


class DemoDataset(torch.utils.data.Dataset):
    """Steps of demonstration files as samples (dicts of numpy arrays + the instruction)."""

    def __init__(self, infos: list[DemoFileInfo], spec: SampleSpec, stats: dict[str, ActionStats],
                 cache_dir: Path | None = None, progress: Callable[[int], Callable[[], None]] | None = None):
        check_files(infos, spec)
        if spec.motion:
            FLOW_SOURCES.check(spec.flow_source)
        self.infos = infos
        self.spec = spec
        self.readers = [DemoReader(info) for info in infos]
        self.index = [(f, d, t) for f, info in enumerate(infos) for d, n in enumerate(info.lengths) for t in range(n)]
        self.actions = [
            [stats[info.dataset].normalize(reader.actions(d)).astype(np.float32) for d in range(len(info.demos))]
            for info, reader in zip(infos, self.readers)
        ]
        self.proprio = None
        if spec.proprio:
            self.proprio = [[stats[info.dataset].normalize_proprio(reader.proprio(d)) for d in range(len(info.demos))]
                            for info, reader in zip(infos, self.readers)]
        self.flow: list[list[np.ndarray]] | None = None
        self.camera: list[list[tuple[np.ndarray, np.ndarray]]] | None = None
        if spec.motion:
            tick = progress(len(self.index)) if progress else (lambda: None)
            self.flow = [file_flow_labels(info, spec, cache_dir, tick) for info in infos]
            self.camera = [[reader.camera(d) for d in range(len(info.demos))] for info, reader in zip(infos, self.readers)]

    def __len__(self) -> int:
        return len(self.index)

    def _resize(self, image: np.ndarray) -> np.ndarray:
        size = self.spec.image_size
        if image.shape[0] == size:
            return image
        return np.asarray(Image.fromarray(image).resize((size, size), Image.LANCZOS))  # as the suites resize

    def __getitem__(self, i: int) -> dict[str, Any]:
        f, d, t = self.index[i]
        reader, info = self.readers[f], self.infos[f]
        sample: dict[str, Any] = {
            "image": self._resize(reader.rgb(d, t, CAMERA)),
            "instruction": info.instruction,
            "action": self.actions[f][d][t],
        }
        if self.proprio is not None:
            sample["proprio"] = self.proprio[f][d][t]
        if self.flow is not None:
            depth = reader.depth(d, t)
            size = self.spec.image_size
            rows = ((np.arange(size) + 0.5) * depth.shape[0] / size).astype(int)  # nearest, as the suites resize
            sample["depth"] = np.ascontiguousarray(depth[rows][:, rows]).astype(np.float32)
            sample["intrinsics"] = rescale_intrinsics(self.camera[f][d][0][t], size / depth.shape[0]).astype(np.float32)
            sample["flow"] = self.flow[f][d][t].astype(np.float32)
        return sample

    def flow_q99(self) -> float:
        """99th percentile of the flow labels' per-point magnitudes (metres): sets the flow-matching scale."""
        if self.flow is None:
            return 0.0
        magnitudes = np.concatenate([np.linalg.norm(a.astype(np.float32), axis=-1).ravel()
                                     for file in self.flow for a in file])
        return float(np.quantile(magnitudes, 0.99))


class Collate:
    """Samples -> lamp.Batch; token ids come from the model's tokenizer (cached per instruction)."""

    def __init__(self, tokenizer, llm_config):
        from lamp_bench.models.lamp.text_tokenizer import instruction_ids, prompt_ids

        self._prompt = lambda s: prompt_ids(tokenizer, llm_config, s)
        self._instruction = lambda s: instruction_ids(tokenizer, s)
        self._cache: dict[str, tuple[list[int], list[int]]] = {}

    def tokens(self, instruction: str) -> tuple[list[int], list[int]]:
        if instruction not in self._cache:
            self._cache[instruction] = (self._prompt(instruction), self._instruction(instruction))
        return self._cache[instruction]

    def __call__(self, samples: list[dict[str, Any]]) -> Batch:
        tokens = [self.tokens(s["instruction"]) for s in samples]
        stack = lambda key: torch.from_numpy(np.stack([s[key] for s in samples])) if key in samples[0] else None
        images = stack("image").permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, S, S)
        return Batch(images=images, prompt_ids=[t[0] for t in tokens], instruction_ids=[t[1] for t in tokens],
                     actions=stack("action"), proprio=stack("proprio"), depth=stack("depth"),
                     intrinsics=stack("intrinsics"), flow=stack("flow"))
