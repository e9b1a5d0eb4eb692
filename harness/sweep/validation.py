"""Loading a sweep file: TOML in, a validated `Sweep` out; every error names the file, table and key."""
from __future__ import annotations

import difflib
import inspect
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from lamp_bench.harness.config import ConfigError, parse_ids, tomllib
from lamp_bench.harness.registry import POLICIES, SUITES, Registry, UnknownNameError, load_builtin_entries
from lamp_bench.harness.sweep.schema import (LABEL_PATTERN, PolicyEntry, Settings, SuiteEntry, Sweep, SweepError,
                                             TableEntry)
from lamp_bench.harness.sweep.steps import TRAIN_REF, with_steps
from lamp_bench.results.paper import PAPER_TABLES

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class _Where:
    """Names the place of a value in a sweep file for error messages."""

    def __init__(self, path: Path, table: str):
        self.path, self.table = path, table

    def error(self, key: str | None, message: str) -> SweepError:
        where = f"[{self.table}]" + (f" {key}" if key else "")
        return SweepError(f"{self.path}: {where}: {message}")

    def check_keys(self, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise self.error(key, f"unknown key{hint} (allowed: {', '.join(allowed)})")

    def get(self, data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        if key not in data:
            return default
        value = data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.error(key, f"expected {names}, got {type(value).__name__} {value!r}")
        return value

    def positive(self, data: Mapping[str, Any], key: str) -> int | None:
        value = self.get(data, key, int)
        if value is not None and value < 1:
            raise self.error(key, f"must be >= 1, got {value}")
        return value

    def expand(self, key: str, value: str) -> str:
        """${VAR} / $VAR from the environment and a leading ~; an unset variable is an error."""

        def substitute(match: re.Match) -> str:
            name = match.group(1) or match.group(2)
            if name not in os.environ:
                raise self.error(key, f"environment variable {name} is not set (in {value!r}); "
                                      f"export {name}=... or edit the file")
            return os.environ[name]

        return os.path.expanduser(_VAR.sub(substitute, value))

    def expand_tree(self, key: str, value: Any) -> Any:
        if isinstance(value, str):
            return self.expand(key, value)
        if isinstance(value, dict):
            return {k: self.expand_tree(f"{key}.{k}", v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.expand_tree(key, v) for v in value]
        return value


_SETTINGS_KEYS = ("tasks", "episodes_per_task", "seeds", "seed", "envs_per_worker", "chunk_size")


def _settings(where: _Where, data: Mapping[str, Any], allowed: Sequence[str]) -> Settings:
    if "seed" in data and "seeds" in data:
        raise where.error("seed", "set either seed or seeds, not both")
    values: dict[str, Any] = {}
    if "tasks" in data and "tasks" in allowed:
        values["tasks"] = _tasks(where, data["tasks"])
    if "episodes_per_task" in allowed:
        values["episodes_per_task"] = where.positive(data, "episodes_per_task")
    if "seed" in data:
        values["seeds"] = (where.get(data, "seed", int),)
    if "seeds" in data:
        seeds = where.get(data, "seeds", list)
        if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise where.error("seeds", f"expected a non-empty list of integers, got {seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise where.error("seeds", f"repeats a seed: {seeds}")
        values["seeds"] = tuple(seeds)
    for key in ("envs_per_worker", "chunk_size"):
        if key in allowed:
            values[key] = where.positive(data, key)
    return Settings(**values)


def _tasks(where: _Where, value: Any) -> tuple[int, ...]:
    """A list of ids, a "0-4,7" string, or "all" (empty tuple)."""
    if isinstance(value, list) and value and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        ids = list(value)
    elif isinstance(value, str):
        try:
            parsed = parse_ids(value, "tasks")
        except ConfigError as error:
            raise where.error("tasks", str(error)) from None
        if parsed is None:
            return ()
        ids = parsed
    else:
        raise where.error("tasks", f"expected a list of task ids, a range like \"0-4\" or \"all\"; got {value!r}")
    if any(t < 0 for t in ids) or len(set(ids)) != len(ids):
        raise where.error("tasks", f"task ids must be distinct and >= 0; got {value!r}")
    return tuple(ids)


def _names(where: _Where, data: Mapping[str, Any], key: str, known: Mapping[str, Any], kind: str) -> tuple[str, ...]:
    if key not in data:
        raise where.error(key, f"missing (a list of {kind} names from this file)")
    names = where.get(data, key, list)
    if not names or not all(isinstance(n, str) for n in names):
        raise where.error(key, f"expected a non-empty list of {kind} names; got {names!r}")
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise where.error(key, f"{name!r} is not defined in this file (no [{kind}.{name}] table).{hint} "
                                   f"Defined: {', '.join(known) or 'none'}")
    if len(set(names)) != len(names):
        raise where.error(key, f"lists a name twice: {names}")
    return tuple(names)


def _check_arguments(where: _Where, registry: Registry, name: str, kwargs: Mapping[str, Any]) -> None:
    """The arguments a sweep gives a policy or suite, against its factory's signature: a typo fails when
    the file loads, not in every job after it has queued. (Imports the factory's module.)"""
    try:
        signature = inspect.signature(registry.get(name))
    except (TypeError, ValueError):  # a factory without an introspectable signature: its jobs will tell
        return
    parameters = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    accepted = [p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                         inspect.Parameter.KEYWORD_ONLY)]
    for key in kwargs:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise where.error(f"kwargs.{key}", f"{registry.kind} {name!r} takes no argument {key!r}{hint} "
                                               f"(it takes: {', '.join(accepted) or 'none'})")


def _paper_table(where: _Where, name: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """`paper = true`: the table's policies and suites are the paper's (lamp_bench.results.paper, where the
    report's layouts read them too), so the sweep and the report cannot disagree."""
    table = PAPER_TABLES.get(name)
    if table is None:
        raise where.error("paper", f"{name!r} is not a table of the paper; its tables: {', '.join(PAPER_TABLES)}")
    for key in ("policies", "suites"):
        if key in entry:
            raise where.error(key, "a paper table takes its policies and suites from lamp_bench.results.paper; "
                                   "remove this key, or drop `paper = true` to define the table here")
    return {"description": table.description, **entry, "policies": list(table.policies), "suites": list(table.suites)}


def load_sweep(path: str | Path, check_checkpoints: bool = True) -> Sweep:
    """Parse and validate a sweep file; every error names the file, table and key.

    `check_checkpoints=False` skips only the check that checkpoint folders exist (for listing)."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise SweepError(f"{path}: not valid TOML: {error}") from None
    load_builtin_entries()
    top = _Where(path, "top level")
    top.check_keys(data, ("sweep", "policies", "suites", "tables", "demos", "train"))
    for key in ("sweep", "policies", "suites", "tables"):
        if key in data and not isinstance(data[key], dict):
            raise top.error(key, f"must be a table ([{key}] / [{key}.<name>]), got {type(data[key]).__name__}")

    head = _Where(path, "sweep")
    meta = data.get("sweep", {})
    head.check_keys(meta, ("name", "description", "seeds", "seed", "envs_per_worker", "chunk_size"))
    defaults = _settings(head, meta, ("envs_per_worker", "chunk_size"))

    policies: dict[str, PolicyEntry] = {}
    for label, entry in data.get("policies", {}).items():
        where = _Where(path, f"policies.{label}")
        if not isinstance(entry, dict):
            raise where.error(None, "must be a table")
        if not LABEL_PATTERN.match(label):
            raise where.error(None, "a label may hold letters, digits and _ . + - (it names files and columns)")
        where.check_keys(entry, ("policy", "checkpoint", "kwargs"))
        name = where.get(entry, "policy", str, label)
        try:
            POLICIES.check(name)
        except UnknownNameError as error:
            raise where.error("policy", str(error)) from None
        checkpoint = where.get(entry, "checkpoint", str)
        if checkpoint is not None and not checkpoint.startswith(TRAIN_REF):  # train:X: checked with the steps
            checkpoint = str(Path(where.expand("checkpoint", checkpoint)).resolve())
            if check_checkpoints and not Path(checkpoint).is_dir():
                raise where.error("checkpoint", f"{checkpoint} (from {entry['checkpoint']!r}) is not a directory; "
                                                f"train or download the checkpoint there, or edit the path")
            if check_checkpoints:  # the folder's files (either kind, headers only), before anything is submitted
                from lamp_bench.models.lamp.policies import check_checkpoint
                try:
                    check_checkpoint(name, checkpoint)
                except ConfigError as error:
                    raise where.error("checkpoint", str(error)) from None
        kwargs = where.expand_tree("kwargs", where.get(entry, "kwargs", dict, {}))
        if "checkpoint" in kwargs:
            raise where.error("kwargs.checkpoint", "set the checkpoint with the `checkpoint` key")
        policy_entry = PolicyEntry(label, name, checkpoint, kwargs)
        _check_arguments(where, POLICIES, name, policy_entry.build_kwargs())
        policies[label] = policy_entry

    suites: dict[str, SuiteEntry] = {}
    for key, entry in data.get("suites", {}).items():
        where = _Where(path, f"suites.{key}")
        if not isinstance(entry, dict):
            raise where.error(None, "must be a table")
        where.check_keys(entry, ("suite", "kwargs") + _SETTINGS_KEYS)
        name = where.get(entry, "suite", str, key)
        try:
            SUITES.check(name)
        except UnknownNameError as error:
            raise where.error("suite", str(error)) from None
        kwargs = where.expand_tree("kwargs", where.get(entry, "kwargs", dict, {}))
        _check_arguments(where, SUITES, name, kwargs)
        suites[key] = SuiteEntry(key, name, _settings(where, entry, _SETTINGS_KEYS), kwargs)

    tables: dict[str, TableEntry] = {}
    for name, entry in data.get("tables", {}).items():
        where = _Where(path, f"tables.{name}")
        if not isinstance(entry, dict):
            raise where.error(None, "must be a table")
        where.check_keys(entry, ("description", "paper", "policies", "suites", "tasks", "episodes_per_task", "seeds",
                                 "seed"))
        if where.get(entry, "paper", bool, False):
            entry = _paper_table(where, name, entry)
        tables[name] = TableEntry(
            name, where.get(entry, "description", str, ""),
            _names(where, entry, "policies", policies, "policies"), _names(where, entry, "suites", suites, "suites"),
            _settings(where, entry, ("tasks", "episodes_per_task")),
        )
    if not tables:
        raise top.error("tables", "the sweep defines no [tables.<name>]: nothing to run")
    sweep = Sweep(path, head.get(meta, "name", str, path.stem), head.get(meta, "description", str, ""),
                  policies, suites, tables, defaults)
    sweep.cells()  # reports label/suite conflicts between tables now
    return with_steps(sweep, data)  # [demos.*] / [train.*] and the cells' checkpoint = "train:X"
