"""Cheaper LIBERO resets, used only where a replay proof says they change nothing.

LIBERO hard-resets on every episode: robosuite rebuilds the XML, reloads the MuJoCo model and creates a new
offscreen render context (texture upload included). A soft reset keeps the loaded model and context
(robosuite's `hard_reset = False`: `mj_resetData`, LIBERO's own placement sampling, then the task's init
state as always). `benchmarks/reset_cost.py` replays the same logged actions after hard and after soft
resets and compares the full simulator state (time, qpos, qvel) and the proprioception at every step;
`suites/reset_proof.json` keeps the result per (suite, task), with the stack it ran on. A soft reset is used
only for (suite, task) listed there as identical on this very stack, never on the first reset after a build
(fast rendering's XML edit applies at a load), and never for an environment class that edits the model in
`on_reset` (LIBERO-Plus: its edits would accumulate over episodes).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from lamp_bench.harness import config

RESET_PROOF_FILE = Path(__file__).with_name("reset_proof.json")
RESET_PROOF_FORMAT = 1


class ResetProofError(config.ConfigError):
    """The reset proof file is unreadable or of another format."""


def reset_key(suite: str, task: str) -> str:
    return f"{suite}/{task}"


def reset_stack(assets_identity: str) -> dict[str, Any]:
    """What a trajectory depends on besides the task: the simulator packages and the asset pack."""
    from lamp_bench.harness.provenance import package_versions

    versions = package_versions()
    return {**{k: versions.get(k) for k in ("mujoco", "robosuite", "libero", "numpy")},
            "assets_identity": assets_identity}


@dataclass(frozen=True)
class ResetProof:
    stack: Mapping[str, Any] = field(default_factory=dict)
    entries: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = RESET_PROOF_FILE) -> "ResetProof":
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ResetProofError(f"reset proof {path} is not JSON ({error}); re-run benchmarks/reset_cost.py") from None
        if data.get("format") != RESET_PROOF_FORMAT:
            raise ResetProofError(f"reset proof {path} has format {data.get('format')!r}, expected "
                                  f"{RESET_PROOF_FORMAT}; re-run benchmarks/reset_cost.py")
        return cls(stack=data.get("stack", {}), entries=data.get("entries", {}))

    def to_json(self) -> dict[str, Any]:
        return {"format": RESET_PROOF_FORMAT, "stack": dict(self.stack),
                "entries": {k: self.entries[k] for k in sorted(self.entries)}}

    @property
    def identity(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]

    def allows_soft(self, key: str, stack: Mapping[str, Any]) -> bool:
        """True only for a (suite, task) replayed on this stack over several whole episodes without a
        difference."""
        if not self.stack or dict(self.stack) != dict(stack):
            return False
        result = self.entries.get(key)
        return (bool(result) and result.get("identical") is True and result.get("soft_episodes", 0) > 0
                and result.get("whole_episodes") is True)

    def merged(self, stack: Mapping[str, Any], entries: Mapping[str, Mapping[str, Any]]) -> "ResetProof":
        kept = dict(self.entries) if dict(self.stack) == dict(stack) else {}
        kept.update(entries)
        return ResetProof(stack=dict(stack), entries=kept)
