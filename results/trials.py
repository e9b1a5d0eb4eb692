"""Real-robot trials in the results directory: one typed record per recorded (or corrected) trial.

Layout: <dir>/trials/<host>-<pid>-<random>.jsonl, one append-only shard per writing process, one complete
JSON line per record (a single write + fsync), never rewritten; a line torn by a kill is ignored on
read. Kept apart from episodes/ so episode readers never see a trial.

A trial is keyed by (label, task type, trial index; trial indices count from 1, as operators do).
A mistyped trial is never edited: a correction is a new record naming the record it supersedes
(`supersedes`) and why (`correction_reason`). The reader keeps every record (`history`) and takes, per
key, the latest correction, else the earliest original (a trial recorded twice by two terminals
counts once, as episodes do).
"""
from __future__ import annotations

import json
import os
import re
import socket
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from lamp_bench.results.errors import ResultsInputError

FORMAT_VERSION = 1
KIND = "real_robot_trial"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
YES = frozenset({"y", "yes"})
NO = frozenset({"n", "no"})

TrialKey = tuple[str, str, int]  # label, task type, trial index


class TrialInputError(ResultsInputError):
    """A trial field that breaks the record's rules; the message names the option and the fix."""


def check_name(value: str, option: str) -> str:
    """Labels, policies and task types: file- and table-safe names (letters, digits, '.', '_', '-')."""
    if not NAME.fullmatch(value or ""):
        raise TrialInputError(f"{option} {value!r} is not a valid name: use up to 64 letters, digits, '.', '_' "
                              "or '-', starting with a letter or digit (e.g. lamp-real, pick_place)")
    return value


def parse_success(text: str, option: str = "--success") -> bool:
    """yes/y -> True, no/n -> False (any case); anything else is refused rather than guessed."""
    answer = (text or "").strip().lower()
    if answer in YES:
        return True
    if answer in NO:
        return False
    raise TrialInputError(f"{option} expects yes or no (y/n); got {text!r}")


def check_trial_index(trial: int, option: str = "--trial") -> int:
    if trial < 1:
        raise TrialInputError(f"{option} {trial} is out of range: trials count from 1")
    return trial


@dataclass(frozen=True)
class TrialPlan:
    """The trials an evaluation intends to run: every task type x trials 1..trials_per_task."""

    task_types: tuple[str, ...]
    trials_per_task: int

    @classmethod
    def parse(cls, task_types: str, trials_per_task: int) -> TrialPlan:
        names = tuple(check_name(t.strip(), "--task-types") for t in task_types.split(",") if t.strip())
        if not names:
            raise TrialInputError("--task-types needs at least one task type, e.g. pick,drawer,tool")
        if len(set(names)) != len(names):
            raise TrialInputError(f"--task-types lists a task type twice: {task_types!r}")
        if trials_per_task < 1:
            raise TrialInputError(f"--trials-per-task must be at least 1; got {trials_per_task}")
        return cls(names, trials_per_task)

    def order(self) -> list[tuple[str, int]]:
        """Task type by task type, trials in index order: the order interactive recording asks in."""
        return [(t, i) for t in self.task_types for i in range(1, self.trials_per_task + 1)]

    def check(self, task_type: str, trial: int) -> None:
        if task_type not in self.task_types:
            raise TrialInputError(f"--task-type {task_type!r} is not in the plan's task types "
                                  f"({', '.join(self.task_types)})")
        if not 1 <= trial <= self.trials_per_task:
            raise TrialInputError(f"--trial {trial} is outside the plan: trials run 1-{self.trials_per_task}")

    def to_json(self) -> dict[str, Any]:
        return {"task_types": list(self.task_types), "trials_per_task": self.trials_per_task}


@dataclass(frozen=True)
class TrialRecord:
    """One line of trials/*.jsonl. `provenance` is what episode records carry (code commit, host,
    package versions); `server_metadata` is what the policy server announced, when it was given."""

    label: str
    policy: str
    task_type: str
    trial: int
    success: bool
    operator: str
    recorded_at: str  # ISO UTC; orders corrections
    record_id: str
    notes: str | None = None
    video: str | None = None
    checkpoint_hash: str | None = None
    server_metadata: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    supersedes: str | None = None  # record_id of the record this correction replaces
    correction_reason: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    kind: str = KIND
    format_version: int = FORMAT_VERSION

    @property
    def key(self) -> TrialKey:
        return (self.label, self.task_type, self.trial)

    @property
    def is_correction(self) -> bool:
        return self.supersedes is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> TrialRecord | None:
        """The record of a stored line, or None for a line that is not a well-formed trial record."""
        if not isinstance(data, dict) or data.get("kind") != KIND:
            return None
        known = {f.name for f in fields(cls)}
        try:
            record = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError:  # a required field is missing
            return None
        typed = (isinstance(record.label, str) and isinstance(record.task_type, str)
                 and isinstance(record.trial, int) and isinstance(record.success, bool))
        return record if typed else None


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


def new_trial(label: str, policy: str, task_type: str, trial: int, success: bool, operator: str, *,
              notes: str | None = None, video: str | None = None, checkpoint_hash: str | None = None,
              server_metadata: dict[str, Any] | None = None, plan: TrialPlan | None = None,
              provenance: dict[str, Any] | None = None) -> TrialRecord:
    """An original trial record, its names checked."""
    return TrialRecord(check_name(label, "--label"), check_name(policy, "--policy"),
                       check_name(task_type, "--task-type"), check_trial_index(trial), bool(success),
                       operator, now(), uuid.uuid4().hex, notes or None, video or None, checkpoint_hash,
                       server_metadata, plan.to_json() if plan else None, provenance=dict(provenance or {}))


def correction_of(current: TrialRecord, reason: str, *, operator: str | None = None, **changes: Any) -> TrialRecord:
    """A new record superseding `current`: its fields with `changes` (success, notes, video) applied; the
    policy, checkpoint, server metadata and provenance stay those of the trial as it was run."""
    allowed = {"success", "notes", "video"}
    unknown = set(changes) - allowed
    if unknown:
        raise TypeError(f"a correction changes only {sorted(allowed)}, not {sorted(unknown)}")
    if not {k for k, v in changes.items() if v is not None}:
        raise TrialInputError("a correction must change something: give --success, --notes or --video")
    if not (reason or "").strip():
        raise TrialInputError("--reason must say why the trial is corrected (e.g. 'typed y, the grasp slipped')")
    updates = {k: v for k, v in changes.items() if v is not None}
    return replace(current, **updates, operator=operator or current.operator, recorded_at=now(),
                   record_id=uuid.uuid4().hex, supersedes=current.record_id, correction_reason=reason.strip())


class TrialStore:
    """Reads and appends the trials of one results directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.trials_dir = self.root / "trials"
        self._shard: Path | None = None

    def append(self, record: TrialRecord) -> Path:
        """One line in this process's shard, written with one write and fsynced before returning."""
        if self._shard is None:
            self.trials_dir.mkdir(parents=True, exist_ok=True)
            self._shard = self.trials_dir / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        line = (json.dumps(record.to_json()) + "\n").encode()
        fd = os.open(self._shard, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return self._shard

    def shards(self) -> list[Path]:
        return sorted(self.trials_dir.glob("*.jsonl")) if self.trials_dir.is_dir() else []

    def iter_records(self) -> Iterator[TrialRecord]:
        """Every complete, well-formed record of every shard (superseded ones included)."""
        for shard in self.shards():
            for line in shard.read_bytes().split(b"\n")[:-1]:  # after the last newline: a torn write
                if not line.strip():
                    continue
                try:
                    record = TrialRecord.from_json(json.loads(line))
                except json.JSONDecodeError:
                    continue
                if record is not None:
                    yield record

    def history(self) -> dict[TrialKey, list[TrialRecord]]:
        """Every record of each trial, oldest first."""
        out: dict[TrialKey, list[TrialRecord]] = {}
        for record in self.iter_records():
            out.setdefault(record.key, []).append(record)
        for records in out.values():
            records.sort(key=lambda r: r.recorded_at)
        return out

    def current(self) -> list[TrialRecord]:
        """Per trial: the latest correction, else the earliest original; sorted by key."""
        return [current_of(records) for _, records in sorted(self.history().items())]

    def find(self, label: str, task_type: str, trial: int) -> TrialRecord | None:
        records = self.history().get((label, task_type, trial))
        return current_of(records) if records else None

    def recorded_keys(self, label: str) -> set[TrialKey]:
        return {r.key for r in self.iter_records() if r.label == label}

    def checkpoint_hashes(self, label: str) -> set[str | None]:
        return {r.checkpoint_hash for r in self.iter_records() if r.label == label}


def current_of(records: list[TrialRecord]) -> TrialRecord:
    """The record that stands for a trial among its records (oldest first): the latest correction wins."""
    corrections = [r for r in records if r.is_correction]
    return corrections[-1] if corrections else records[0]
