"""Steps before evaluation: demonstration sets and training runs declared in a sweep file, as a graph.

    [demos.<name>]   suite, tasks, episodes (successful demos per task), init_states (tried in order),
                     noise (DART action noise), seed, image_size, cameras
    [train]          resources of training jobs on Slurm: gpus, time, cpus_per_task, mem, partition
    [train.<name>]   preset, variant (the registry variant whose architecture trains: lamp, ungated, ...),
                     data = "demos:<name>" (or a list), stages = "1" | "2" | "both", steps (stage-2 steps),
                     any training-config field (stage1_steps, batch_size, lr, seed, init_checkpoint =
                     "train:<other>", ...), and optional select = {every, episodes, init_states}
    [policies.<label>] checkpoint = "train:<name>"   evaluates that training run's checkpoint

Outputs live in the results directory: `<out>/steps/demos/<name>/` (HDF5 files + demo_set.json) and
`<out>/steps/train/<name>/run/` (the trainer's folder, with lineage.json); `<out>/steps/train/<name>/checkpoint`
appears (a link to run/) only once the step finished, so a cell can never load weights of a failed or
unfinished training. Each step writes `step.json` (status, error, finished_at) in its folder.

Checked when the file loads (one line each): a `train:` or `demos:` reference naming no step, a cycle
between steps, a variant or training field the trainer does not know, selection init states overlapping
the init states a cell evaluates. Evaluation on init states the demonstrations may use is not an error
(LIBERO's demonstrations and benchmark share init states) but is flagged (`StepGraph.flags`).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from lamp_bench.harness.config import ConfigError, parse_ids
from lamp_bench.harness.selection import Selection, check_disjoint, parse_selection
from lamp_bench.harness.sweep.schema import SweepError

TRAIN_REF, DEMOS_REF = "train:", "demos:"
DEMO_KEYS = ("suite", "tasks", "episodes", "init_states", "noise", "seed", "image_size", "cameras", "kwargs")
RESOURCE_KEYS = ("gpus", "time", "cpus_per_task", "mem", "partition")
# Sweep names for training-config fields; every other TrainConfig field passes under its own name.
TRAIN_ALIASES = {"variant": "policy", "stages": "stage", "steps": "stage2_steps"}
TRAIN_FIXED = ("data", "out", "select", "progress")  # set by the sweep itself


@dataclass(frozen=True)
class DemoStep:
    name: str
    suite: str
    tasks: tuple[int, ...] | None
    episodes: int
    init_states: tuple[int, ...] | None = None
    noise: float = 0.0
    seed: int = 0
    image_size: int = 128
    cameras: tuple[str, ...] = ("third_person", "wrist")
    suite_kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{DEMOS_REF}{self.name}"

    @property
    def needs(self) -> tuple[str, ...]:
        return ()

    def folder(self, out: Path) -> Path:
        return Path(out) / "steps" / "demos" / self.name


@dataclass(frozen=True)
class TrainStep:
    name: str
    data: tuple[str, ...]  # demos step names
    options: Mapping[str, Any]  # TrainConfig fields
    select: Selection | None = None
    init_from: str | None = None  # another training step whose checkpoint it starts from

    @property
    def key(self) -> str:
        return f"{TRAIN_REF}{self.name}"

    @property
    def needs(self) -> tuple[str, ...]:
        return tuple(f"{DEMOS_REF}{d}" for d in self.data) + ((f"{TRAIN_REF}{self.init_from}",) if self.init_from else ())

    def folder(self, out: Path) -> Path:
        return Path(out) / "steps" / "train" / self.name

    def run_dir(self, out: Path) -> Path:
        return self.folder(out) / "run"

    def checkpoint(self, out: Path) -> Path:
        """What cells load: exists only once the step finished (see module docstring)."""
        return self.folder(out) / "checkpoint"


@dataclass(frozen=True)
class TrainResources:
    gpus: int = 1
    time: str = "4:00:00"
    cpus_per_task: int | None = None
    mem: str | None = None
    partition: str | None = None


@dataclass(frozen=True)
class StepGraph:
    demos: Mapping[str, DemoStep]
    train: Mapping[str, TrainStep]
    order: tuple[str, ...]  # step keys, dependencies first
    resources: TrainResources = TrainResources()
    flags: tuple[str, ...] = ()  # evaluations on init states the demonstrations may use

    def step(self, key: str) -> DemoStep | TrainStep:
        kind, _, name = key.partition(":")
        return self.demos[name] if kind == "demos" else self.train[name]

    def upstream(self, key: str) -> list[str]:
        """Every step `key` depends on, transitively, and itself."""
        seen: list[str] = []
        stack = [key]
        while stack:
            k = stack.pop()
            if k not in seen:
                seen.append(k)
                stack += list(self.step(k).needs)
        return seen

    def __bool__(self) -> bool:
        return bool(self.demos or self.train)


def _error(path: Path, table: str, key: str | None, message: str) -> SweepError:
    return SweepError(f"{path}: [{table}]" + (f" {key}" if key else "") + f": {message}")


def _ids(path: Path, table: str, key: str, value: Any) -> tuple[int, ...] | None:
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        return tuple(value)
    if isinstance(value, str):
        try:
            ids = parse_ids(value, key)
        except ConfigError as error:
            raise _error(path, table, key, str(error)) from None
        return None if ids is None else tuple(ids)
    raise _error(path, table, key, f"expected ids like [0, 1] or a range like \"0-4\"; got {value!r}")


def _check_keys(path: Path, table: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _error(path, table, key, f"unknown key{hint} (allowed: {', '.join(allowed)})")


def _demo_step(path: Path, name: str, raw: Any) -> DemoStep:
    table = f"demos.{name}"
    if not isinstance(raw, dict):
        raise _error(path, table, None, "must be a table")
    _check_keys(path, table, raw, DEMO_KEYS)
    for key in ("suite", "episodes"):
        if key not in raw:
            raise _error(path, table, key, "missing (suite = \"libero_spatial\", episodes = successful demos per task)")
    from lamp_bench.harness.registry import SUITES, UnknownNameError

    try:
        SUITES.check(str(raw["suite"]))
    except UnknownNameError as error:
        raise _error(path, table, "suite", str(error)) from None
    episodes = raw["episodes"]
    if not isinstance(episodes, int) or episodes < 1:
        raise _error(path, table, "episodes", f"must be a whole number >= 1; got {episodes!r}")
    noise = raw.get("noise", 0.0)
    if not isinstance(noise, (int, float)) or noise < 0:
        raise _error(path, table, "noise", f"must be a number >= 0 (DART action noise std); got {noise!r}")
    return DemoStep(name=name, suite=str(raw["suite"]),
                    tasks=_ids(path, table, "tasks", raw["tasks"]) if "tasks" in raw else None, episodes=episodes,
                    init_states=_ids(path, table, "init_states", raw["init_states"]) if "init_states" in raw else None,
                    noise=float(noise), seed=int(raw.get("seed", 0)), image_size=int(raw.get("image_size", 128)),
                    cameras=tuple(raw.get("cameras", ("third_person", "wrist"))), suite_kwargs=dict(raw.get("kwargs", {})))


def _refs(path: Path, table: str, key: str, value: Any, prefix: str, known: Mapping[str, Any], kind: str) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    names = []
    for item in values:
        if not isinstance(item, str) or not item.startswith(prefix):
            raise _error(path, table, key, f"expected \"{prefix}<name>\" (a [{kind}.<name>] step); got {item!r}")
        name = item[len(prefix):]
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f" Did you mean {prefix}{close[0]}?" if close else ""
            raise _error(path, table, key, f"{item!r} names no [{kind}.{name}] step.{hint} Defined: "
                                           f"{', '.join(known) or 'none'}")
        names.append(name)
    return tuple(names)


def _train_step(path: Path, name: str, raw: Any, demos: Mapping[str, DemoStep], train_names: Sequence[str]) -> TrainStep:
    from lamp_bench.models.training.config import TrainConfig, build_train_config

    table = f"train.{name}"
    if not isinstance(raw, dict):
        raise _error(path, table, None, "must be a table")
    fields = [f for f in TrainConfig.__dataclass_fields__ if f not in TRAIN_FIXED]
    _check_keys(path, table, raw, sorted(set(fields) | set(TRAIN_ALIASES) | {"data", "select"}))
    if "data" not in raw:
        raise _error(path, table, "data", "missing (data = \"demos:<name>\")")
    data = _refs(path, table, "data", raw["data"], DEMOS_REF, demos, "demos")
    options = {TRAIN_ALIASES.get(k, k): v for k, v in raw.items() if k not in ("data", "select")}
    if "stage" in options:
        options["stage"] = str(options["stage"])
    init_from = None
    if isinstance(options.get("init_checkpoint"), str) and options["init_checkpoint"].startswith(TRAIN_REF):
        init_from = _refs(path, table, "init_checkpoint", options.pop("init_checkpoint"), TRAIN_REF,
                          dict.fromkeys(train_names), "train")[0]
    from lamp_bench.models.lamp.policies import VARIANTS

    variant = options.get("policy", "lamp")
    if variant not in VARIANTS:
        close = difflib.get_close_matches(str(variant), list(VARIANTS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise _error(path, table, "variant", f"{variant!r} is not a variant the trainer knows.{hint} Trainable: "
                                             f"{', '.join(VARIANTS)}")
    try:  # the trainer's own checks: preset, stage, field types (no data is read)
        build_train_config(data=["<demos>"], out="<checkpoint>", **options)
    except ConfigError as error:
        raise _error(path, table, None, str(error)) from None
    except TypeError as error:
        raise _error(path, table, None, str(error)) from None
    select = None
    if "select" in raw:
        if not isinstance(raw["select"], dict):
            raise _error(path, table, "select", "expected a table: select = {every = N, episodes = M, init_states = \"10-19\"}")
        first = demos[data[0]]
        try:
            select = parse_selection(raw["select"], f"{path}: [{table}]", first.suite, first.tasks, first.suite_kwargs)
        except SweepError:
            raise
        except ConfigError as error:
            raise SweepError(str(error)) from None
    return TrainStep(name=name, data=data, options=options, select=select, init_from=init_from)


def _order(path: Path, demos: Mapping[str, DemoStep], train: Mapping[str, TrainStep]) -> tuple[str, ...]:
    """Dependencies first; a cycle between training steps is an error naming it."""
    order: list[str] = [d.key for d in demos.values()]
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "open":
            cycle = trail[trail.index(name):] + [name]
            raise _error(path, f"train.{name}", "init_checkpoint", "training steps form a cycle: "
                         + " -> ".join(f"train:{n}" for n in cycle) + "; start one of them from a checkpoint "
                                                                         "that no step of the cycle trains")
        state[name] = "open"
        step = train[name]
        if step.init_from:
            visit(step.init_from, trail + [name])
        state[name] = "done"
        order.append(step.key)

    for name in train:
        visit(name, [])
    return tuple(order)


def load_steps(path: Path, data: Mapping[str, Any]) -> StepGraph:
    """The `[demos.*]` and `[train.*]` tables of a parsed sweep file (checked; see the module docstring)."""
    raw_demos = data.get("demos", {})
    raw_train = data.get("train", {})
    for key, value in (("demos", raw_demos), ("train", raw_train)):
        if not isinstance(value, dict):
            raise _error(path, key, None, f"must be a table ([{key}.<name>])")
    demos = {name: _demo_step(path, name, raw) for name, raw in raw_demos.items()}
    resources_raw = {k: v for k, v in raw_train.items() if not isinstance(v, dict)}
    _check_keys(path, "train", resources_raw, RESOURCE_KEYS)
    names = [n for n, v in raw_train.items() if isinstance(v, dict)]
    train = {name: _train_step(path, name, raw_train[name], demos, names) for name in names}
    resources = TrainResources(**resources_raw)
    return StepGraph(demos, train, _order(path, demos, train), resources)


def check_cells(path: Path, graph: StepGraph, cells: Sequence[Any], states_of) -> StepGraph:
    """Every `checkpoint = "train:X"` names a step; evaluation never uses its selection's init states;
    evaluation on init states its demonstrations may have used is flagged. `states_of(cell)`: the
    (task, init state) pairs a cell evaluates."""
    flags: list[str] = []
    for cell in cells:
        ref = cell.policy_kwargs.get("checkpoint")
        if not isinstance(ref, str) or not ref.startswith(TRAIN_REF):
            continue
        name = ref[len(TRAIN_REF):]
        if name not in graph.train:
            close = difflib.get_close_matches(name, list(graph.train), n=1)
            hint = f" Did you mean train:{close[0]}?" if close else ""
            raise _error(path, f"policies.{cell.label}", "checkpoint",
                         f"{ref!r} names no [train.{name}] step.{hint} Defined: {', '.join(graph.train) or 'none'}")
        step = graph.train[name]
        pairs = states_of(cell)
        if step.select is not None and cell.suite == step.select.suite:
            _refuse_overlap(step.select.validation_states, sorted({s for _, s in pairs}),
                           f"{path}: [policies.{cell.label}] on {cell.suite} (checkpoint {ref}, selected on "
                           f"init states {','.join(map(str, step.select.validation_states))})")
        for demo_name in step.data:
            demos = graph.demos[demo_name]
            if demos.suite != cell.suite:
                continue
            tried = set(demos.init_states) if demos.init_states is not None else None
            shared = sorted({s for t, s in pairs if (demos.tasks is None or t in demos.tasks)
                             and (tried is None or s in tried)})
            if shared:
                flags.append(f"{cell.label} on {cell.suite}: evaluates init states the demonstrations demos:{demo_name} "
                             f"may use ({_span(shared)}): not held out")
    return StepGraph(graph.demos, graph.train, graph.order, graph.resources, tuple(flags))


def _refuse_overlap(selection_states: Sequence[int], evaluation_states: Sequence[int], where: str) -> None:
    try:
        check_disjoint(selection_states, evaluation_states, where)
    except ConfigError as error:
        raise SweepError(str(error)) from None


def _span(ids: Sequence[int]) -> str:
    return ",".join(map(str, ids[:10])) + (",..." if len(ids) > 10 else "")


def resolve_checkpoint(kwargs: Mapping[str, Any], out: Path, graph: StepGraph | None) -> dict[str, Any]:
    """Policy kwargs with `checkpoint = "train:X"` turned into that step's checkpoint folder under `out`."""
    ref = kwargs.get("checkpoint")
    if graph is None or not isinstance(ref, str) or not ref.startswith(TRAIN_REF):
        return dict(kwargs)
    return {**kwargs, "checkpoint": str(graph.train[ref[len(TRAIN_REF):]].checkpoint(Path(out).resolve()))}


def cell_step(cell: Any) -> str | None:
    """The training step a cell evaluates (`train:X`), if any (before or after resolution)."""
    ref = str(cell.policy_kwargs.get("checkpoint") or "")
    if ref.startswith(TRAIN_REF):
        return ref
    parts = Path(ref).parts
    if len(parts) >= 4 and parts[-1] == "checkpoint" and parts[-4] == "steps" and parts[-3] == "train":
        return f"{TRAIN_REF}{parts[-2]}"
    return None


def evaluated_pairs(cell: Any) -> list[tuple[int, int]]:
    """(task, init state) pairs a cell evaluates, from its suite's own enumeration (cheap: no simulator)."""
    from lamp_bench.harness.registry import SUITES

    suite = SUITES.build(cell.suite, **cell.suite_kwargs)
    return sorted({(e.task_id, e.init_index) for seed in cell.seeds
                   for e in suite.episodes(cell.tasks, cell.episodes_per_task, seed)})


def with_steps(sweep: Any, data: Mapping[str, Any]) -> Any:
    """The loaded sweep with its step graph (None when it declares no steps and no cell names one)."""
    from dataclasses import replace

    graph = load_steps(sweep.path, data)
    cells = sweep.cells()
    if not graph and not any(str(c.policy_kwargs.get("checkpoint", "")).startswith(TRAIN_REF) for c in cells):
        return sweep
    return replace(sweep, steps=check_cells(sweep.path, graph, cells, evaluated_pairs))


def only_tables(sweep: Any, names: Sequence[str]) -> Any:
    """The sweep cut to the tables `names` and the steps their cells need (`lamp-bench sweep --tables`):
    the other tables' cells, demonstrations and trainings are neither run nor shown."""
    from dataclasses import replace

    unknown = [n for n in names if n not in sweep.tables]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(sweep.tables), n=1)
        raise SweepError(f"--tables {','.join(unknown)}: {sweep.path} has no such table"
                         + (f" (did you mean {close[0]}?)" if close else "") + f"; its tables: {', '.join(sweep.tables)}")
    kept = replace(sweep, tables={n: t for n, t in sweep.tables.items() if n in names})
    graph = sweep.steps
    if not graph:
        return kept
    needed = {k for cell in kept.cells() if (ref := cell_step(cell)) for k in graph.upstream(ref)}
    cut = StepGraph({n: d for n, d in graph.demos.items() if d.key in needed},
                    {n: t for n, t in graph.train.items() if t.key in needed},
                    tuple(k for k in graph.order if k in needed), graph.resources)
    return replace(kept, steps=check_cells(sweep.path, cut, kept.cells(), evaluated_pairs))
