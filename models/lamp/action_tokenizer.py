"""OpenVLA's action tokenizer and action (un)normalisation.

Actions are normalised per dimension to [-1, 1] with the dataset's 1st/99th percentiles (dimensions
whose `mask` is false, e.g. the gripper, are left as they are), then binned: 256 uniform bin edges on
[-1, 1], token id = vocab_end - digitize(a, edges), i.e. the last 256 ids below `vocab_end`.
Decoding maps an id to the centre of its bin (255 centres: the top edge shares the last centre).
Models with a proprioception token normalise it the same way, with the dataset's own q01/q99.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lamp_bench.harness.config import ConfigError


class ActionTokenizer:
    def __init__(self, vocab_end: int, n_bins: int = 256):
        self.vocab_end = vocab_end
        self.n_bins = n_bins
        self.bins = np.linspace(-1.0, 1.0, n_bins)
        self.centers = (self.bins[:-1] + self.bins[1:]) / 2.0

    @property
    def first_id(self) -> int:
        """Smallest action token id (action ids are first_id .. vocab_end - 1)."""
        return self.vocab_end - self.n_bins

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """(..., D) normalised actions -> (..., D) int64 token ids."""
        clipped = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        return (self.vocab_end - np.digitize(clipped, self.bins)).astype(np.int64)

    def decode(self, ids: np.ndarray | torch.Tensor) -> np.ndarray:
        """(..., D) token ids -> (..., D) normalised actions (bin centres)."""
        ids = ids.cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
        index = np.clip(self.vocab_end - ids - 1, 0, self.centers.shape[0] - 1)
        return self.centers[index]


# Gripper conventions of the data a checkpoint was trained on, stored per dataset in
# dataset_statistics.json under "gripper". OpenVLA's released data (and statistics files, which
# carry no such key) use [0, 1] with 1 = open; lamp-bench's own demonstrations use the canonical
# -1 = open, +1 = close of harness.policy directly.
GRIPPER_OPENVLA = "openvla"
GRIPPER_CANONICAL = "canonical"

# The proprioception a model with `cfg.proprio` sees: end-effector position (3) and gripper joints (2),
# picked from harness.policy's (9,) vector (eef xyz, eef quat xyzw, gripper joints). The orientation is
# left out: q and -q are one rotation, and a hand pointing down sits where axis-angle wraps around.
PROPRIO_DIM = 5


def proprio_features(state: np.ndarray) -> np.ndarray:
    """(..., 9) harness proprioception -> (..., PROPRIO_DIM)."""
    state = np.asarray(state)
    return np.concatenate([state[..., :3], state[..., 7:9]], axis=-1)


def _to_unit(values: np.ndarray, q01: np.ndarray, q99: np.ndarray) -> np.ndarray:
    """q01 -> -1, q99 -> +1 (unclipped)."""
    return 2.0 * (values - q01) / np.maximum(q99 - q01, 1e-8) - 1.0


@dataclass(frozen=True)
class ActionStats:
    """One dataset's entry of dataset_statistics.json."""

    q01: np.ndarray  # (D,)
    q99: np.ndarray  # (D,)
    mask: np.ndarray  # (D,) bool: which dimensions are normalised
    gripper: str = GRIPPER_OPENVLA
    proprio_q01: np.ndarray | None = None  # (PROPRIO_DIM,) when the data had proprioception
    proprio_q99: np.ndarray | None = None

    @classmethod
    def from_json(cls, entry: dict, where: str) -> "ActionStats":
        try:
            action = entry["action"]
            q01 = np.asarray(action["q01"], dtype=np.float64)
            q99 = np.asarray(action["q99"], dtype=np.float64)
            mask = np.asarray(action.get("mask", np.ones_like(q01, dtype=bool)), dtype=bool)
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{where}: needs action.q01, action.q99 (and optionally action.mask): {e}") from e
        gripper = entry.get("gripper", GRIPPER_OPENVLA)
        if not (q01.shape == q99.shape == mask.shape) or q01.ndim != 1:
            raise ConfigError(f"{where}: q01 {q01.shape}, q99 {q99.shape}, mask {mask.shape} must be equal 1-D shapes")
        if gripper not in (GRIPPER_OPENVLA, GRIPPER_CANONICAL):
            raise ConfigError(f"{where}: gripper convention {gripper!r} is not {GRIPPER_OPENVLA!r} or {GRIPPER_CANONICAL!r}")
        proprio = entry.get("proprio") or {}
        p01, p99 = (np.asarray(proprio[k], dtype=np.float64) if k in proprio else None for k in ("q01", "q99"))
        if (p01 is None) != (p99 is None) or (p01 is not None and (p01.shape != p99.shape or p01.ndim != 1)):
            raise ConfigError(f"{where}: proprio.q01 and proprio.q99 must both be given, as equal 1-D shapes")
        return cls(q01, q99, mask, gripper, p01, p99)

    def to_json(self) -> dict:
        entry = {
            "action": {"q01": self.q01.tolist(), "q99": self.q99.tolist(), "mask": self.mask.tolist()},
            "gripper": self.gripper,
        }
        if self.proprio_q01 is not None:
            entry["proprio"] = {"q01": self.proprio_q01.tolist(), "q99": self.proprio_q99.tolist()}
        return entry

    def normalize_proprio(self, features: np.ndarray) -> np.ndarray:
        """(..., PROPRIO_DIM) proprio_features -> [-1, 1] (float32)."""
        if self.proprio_q01 is None or self.proprio_q01.shape != (PROPRIO_DIM,):
            have = "none" if self.proprio_q01 is None else f"{self.proprio_q01.shape[0]} values"
            raise ConfigError(f"these statistics have no proprioception q01/q99 of {PROPRIO_DIM} values ({have}); "
                             "a model with a proprioception token needs the statistics of the data it was trained on")
        return np.clip(_to_unit(features, self.proprio_q01, self.proprio_q99), -1.0, 1.0).astype(np.float32)

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        """Raw dataset actions (..., D) -> [-1, 1] (for training targets)."""
        return np.clip(np.where(self.mask, _to_unit(actions, self.q01, self.q99), actions), -1.0, 1.0)

    def unnormalize(self, normalized: np.ndarray) -> np.ndarray:
        return np.where(self.mask, 0.5 * (normalized + 1.0) * (self.q99 - self.q01) + self.q01, normalized)

    def to_canonical(self, normalized: np.ndarray) -> np.ndarray:
        """Decoded (B, 7) actions -> harness.policy's convention (float32, in [-1, 1])."""
        out = self.unnormalize(normalized)
        if self.gripper == GRIPPER_OPENVLA:
            # OpenVLA's LIBERO recipe: [0, 1] -> [-1, 1], binarise, then flip so that +1 = close.
            out[..., -1] = -np.sign(2.0 * out[..., -1] - 1.0)
        return np.clip(out, -1.0, 1.0).astype(np.float32)
