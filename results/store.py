"""The episode store: one JSON record per finished episode, in per-writer append-only shards.

Layout of a results directory:
    <dir>/episodes/<host>-<pid>-<random>.jsonl   one shard per writing process, never rewritten
    <dir>/profile/*.json                         `lamp-bench profile` outputs (optional)
    <dir>/jobs/                                  executor bookkeeping (optional)

Why shards: many processes (Slurm array tasks on a shared network filesystem) write at once; each
owns its shard, appends one complete line per episode with a single write + fsync, and nobody ever
rewrites a file. A line torn by a kill is ignored on read. Readers dedupe by episode key (a resolved
record beats an environment error; among equals the earliest finished wins), so a re-run or a requeued
job can never duplicate an episode, and an env error retried on resume is replaced by its result.

A record is `results.record.EpisodeRecord` as JSON (its fields, outcomes and key are defined there).
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

from lamp_bench.results.record import (  # noqa: F401  (record_key is re-exported: readers key records by it)
    REQUIRED_FIELDS, EpisodeKey, EpisodeRecord, is_resolved, record_key,
)


class ShardWriter:
    """Appends records to this process's own shard; each record is one write of one full line."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self.path = directory / name
        self._fd: int | None = None

    def append(self, record: EpisodeRecord | dict[str, Any]) -> None:
        if isinstance(record, EpisodeRecord):
            record = record.to_json()
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


def _precedence(record: dict[str, Any]) -> tuple[bool, str]:
    return (not is_resolved(record), record.get("finished_at") or "")


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
        """Deduplicated by episode key: a resolved record beats an env error, then the earliest finished wins."""
        best: dict[tuple, dict[str, Any]] = {}
        with _collector_paused():
            for record in self.iter_raw():
                key = record_key(record)
                kept = best.get(key)
                if kept is None or _precedence(record) < _precedence(kept):
                    best[key] = record
        return list(best.values())

    def done_keys(self, label: str | None = None) -> set[EpisodeKey]:
        """Keys of episodes that need not run again: every resolved record (env errors are retried)."""
        return {record_key(r) for r in self.iter_raw() if (label is None or r["label"] == label) and is_resolved(r)}

    def checkpoint_hashes(self, label: str) -> set[str | None]:
        return {r.get("checkpoint_hash") for r in self.iter_raw() if r["label"] == label}

    def protocols(self, label: str, suite: str) -> set[str | None]:
        """Protocol ids of the label's records on a suite (None: a record from before protocol ids)."""
        return {r.get("protocol") for r in self.iter_raw() if r["label"] == label and r["suite"] == suite}

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
