"""The episode record: the one typed contract between the harness that writes results and everything
that reads them.

On disk a record is one JSON object per line (see results.store); `EpisodeRecord.to_json` writes that
object and `from_json` reads it back. Readers that scan 10^5 records (aggregation, reports) read the
JSON dicts directly and use the helpers here (`record_key`, `outcome_of`) so that every rule about a
record lives in this module once.

Outcomes (the `status` field):
    success       the task succeeded                                        counts as a success
    failure       not achieved (max steps, or the suite ended the episode)  counts as a failure
    policy_error  the policy raised, or returned NaN / an out-of-range action
                                                                            a failure, shown separately
    env_error     the simulator crashed, hung, or failed to reset or step   never a failure: excluded
                                                                            from rates, retried on resume
Records of schema 1 (before this taxonomy) say "error" for both kinds of error; they are read as
policy errors, which is how they were counted when they were written.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, NamedTuple

SCHEMA_VERSION = 2

SUCCESS, FAILURE, POLICY_ERROR, ENV_ERROR = "success", "failure", "policy_error", "env_error"
OUTCOMES = (SUCCESS, FAILURE, POLICY_ERROR, ENV_ERROR)
LEGACY_ERROR = "error"  # schema 1


class EpisodeKey(NamedTuple):
    """The identity of an episode in a results directory: a label runs an episode once."""

    label: str
    suite: str
    task_id: int
    init_index: int
    seed: int

    @classmethod
    def of(cls, label: str, episode: Any) -> "EpisodeKey":
        """The key of `episode` (anything with suite, task_id, init_index and seed) run under `label`."""
        return cls(label, episode.suite, episode.task_id, episode.init_index, episode.seed)


KEY_FIELDS = EpisodeKey._fields
REQUIRED_FIELDS = KEY_FIELDS + ("policy", "success", "status", "steps")


def record_key(record: Mapping[str, Any]) -> EpisodeKey:
    return EpisodeKey(*(record[k] for k in KEY_FIELDS))


def outcome_of(record: Mapping[str, Any]) -> str:
    """The record's outcome in the current taxonomy (schema-1 "error" reads as policy_error)."""
    status = record["status"]
    return POLICY_ERROR if status == LEGACY_ERROR else status


def is_resolved(record: Mapping[str, Any]) -> bool:
    """Whether the episode has a result that counts: everything but an environment error."""
    return outcome_of(record) != ENV_ERROR


def protocol_id(conditions: Mapping[str, Any]) -> str:
    """Hash of everything that defines an episode's conditions (a suite's `protocol_fields()`) plus the
    record schema version: two records with equal ids were run under the same protocol."""
    text = json.dumps({"schema": SCHEMA_VERSION, "conditions": conditions}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EpisodeFailure:
    """Why an episode did not end normally: the outcome it leads to and a one-line reason."""

    outcome: str  # POLICY_ERROR or ENV_ERROR
    reason: str

    def __post_init__(self) -> None:
        if self.outcome not in (POLICY_ERROR, ENV_ERROR):
            raise ValueError(f"a failure leads to policy_error or env_error, not {self.outcome!r}")


@dataclass
class EpisodeRecord:
    """One finished episode. Field order is the order on disk: flat fields first, nested dicts after."""

    label: str
    policy: str
    suite: str
    task_id: int
    init_index: int
    seed: int
    task_name: str
    instruction: str
    status: str  # one of OUTCOMES
    success: bool
    steps: int
    wall_time_s: float
    failure_reason: str | None
    checkpoint_hash: str | None
    finished_at: str  # ISO 8601, UTC
    protocol: str  # protocol_id of the suite's conditions
    attempts: int = 1  # environment processes this episode took (env errors retried in a fresh one)
    schema: int = SCHEMA_VERSION
    policy_config: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # suite metrics, task labels, video path
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in OUTCOMES:
            raise ValueError(f"episode status must be one of {', '.join(OUTCOMES)}; got {self.status!r}")
        if self.success != (self.status == SUCCESS):
            raise ValueError(f"success={self.success} contradicts status {self.status!r}")

    def key(self) -> EpisodeKey:
        return record_key(asdict(self))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "EpisodeRecord":
        """A stored record; schema-1 records (no protocol, status "error") are read in today's terms."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["status"] = outcome_of(data)
        values.setdefault("protocol", "")
        values.setdefault("schema", 1)
        for optional in ("task_name", "instruction", "failure_reason", "checkpoint_hash", "finished_at"):
            values.setdefault(optional, None if optional in ("failure_reason", "checkpoint_hash") else "")
        values.setdefault("wall_time_s", 0.0)
        return cls(**values)
