"""The episode store: one JSON record per finished episode, in per-writer append-only shards.

Layout of a results directory:
    <dir>/episodes/<host>-<pid>-<random>.jsonl   one shard per writing process, never rewritten
    <dir>/profile/*.json                         `lamp-bench profile` outputs (optional)
    <dir>/jobs/                                  executor bookkeeping (optional)

Why shards: many processes (Slurm array tasks on a shared network filesystem) write at once; each
owns its shard, appends one complete line per episode with a single write + fsync, and nobody ever
rewrites a file. A line torn by a kill is ignored on read. Readers dedupe by episode key (the
earliest finished record wins), so a re-run or a requeued job can never duplicate an episode.

A record (flat keys first, nested dicts after):
    label, policy, suite, task_id, init_index, seed, task_name, instruction, status
    ("success" | "failure" | "error"), success, steps, wall_time_s, failure_reason, checkpoint_hash,
    finished_at (ISO UTC), policy_config {..}, info {suite metrics, task labels}, provenance {..}
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import socket
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

KEY_FIELDS = ("label", "suite", "task_id", "init_index", "seed")
REQUIRED_FIELDS = KEY_FIELDS + ("policy", "success", "status", "steps")


def record_key(record: dict[str, Any]) -> tuple:
    return tuple(record[k] for k in KEY_FIELDS)


def episode_key(label: str, suite: str, task_id: int, init_index: int, seed: int) -> tuple:
    return (label, suite, task_id, init_index, seed)


class ShardWriter:
    """Appends records to this process's own shard; each record is one write of one full line."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self.path = directory / name
        self._fd: int | None = None

    def append(self, record: dict[str, Any]) -> None:
        missing = [k for k in REQUIRED_FIELDS if k not in record]
        if missing:
            raise ValueError(f"episode record lacks {missing}")
        line = (json.dumps(record, sort_keys=False, default=_json_default) + "\n").encode()
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(self._fd, line)
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in an episode record")


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while building many records: JSON makes no reference
    cycles, yet each collection would rescan every record built so far (it halves a 100k-record read)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class EpisodeStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.episodes_dir = self.root / "episodes"

    def writer(self) -> ShardWriter:
        return ShardWriter(self.episodes_dir)

    def shards(self) -> list[Path]:
        if not self.episodes_dir.is_dir():
            return []
        return sorted(self.episodes_dir.glob("*.jsonl"))

    def iter_raw(self) -> Iterator[dict[str, Any]]:
        """Every complete, well-formed line of every shard (duplicates included)."""
        for shard in self.shards():
            with open(shard, "rb") as f:
                data = f.read()
            for line in data.split(b"\n")[:-1]:  # the part after the last newline is a torn write
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and all(k in record for k in REQUIRED_FIELDS):
                    yield record

    def records(self) -> list[dict[str, Any]]:
        """Deduplicated by episode key; the earliest finished record of a key wins."""
        best: dict[tuple, dict[str, Any]] = {}
        with _collector_paused():
            for record in self.iter_raw():
                key = record_key(record)
                kept = best.get(key)
                if kept is None or record.get("finished_at", "") < kept.get("finished_at", ""):
                    best[key] = record
        return list(best.values())

    def done_keys(self, label: str | None = None) -> set[tuple]:
        return {record_key(r) for r in self.iter_raw() if label is None or r["label"] == label}

    def checkpoint_hashes(self, label: str) -> set[str | None]:
        return {r.get("checkpoint_hash") for r in self.iter_raw() if r["label"] == label}

    def dataframe(self, records: Iterable[dict[str, Any]] | None = None):
        """Flat pandas view: top-level fields plus `info.*` columns (task labels, suite metrics)."""
        return self.frame(self.records() if records is None else records)

    @staticmethod
    def frame(records: Iterable[dict[str, Any]]):
        """The flat view of given records (see `dataframe`)."""
        import pandas as pd

        rows = []
        with _collector_paused():
            for r in records:
                row = {k: v for k, v in r.items() if not isinstance(v, dict)}
                for k, v in (r.get("info") or {}).items():
                    if not isinstance(v, (dict, list)):
                        row[f"info.{k}"] = v
                rows.append(row)
        return pd.DataFrame(rows)
