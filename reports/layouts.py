"""The paper's tables as data: one section per experiment present in a results directory.

Rows of the main tables are record labels (methods); paper rows come from paper_numbers.json; a Δ row
gives measured minus published for a label whose policy the paper reports; a differences table tests
every method against the baseline (paired on shared episodes, else unpaired). The table model is in
table_model, the rate and difference tables are built by rate_tables, the sequential sections by
sequential_tables (all re-exported here); rendering is elsewhere.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from lamp_bench.reports.rate_tables import CLUSTER_NOTE, holm_rows, rate_tables
from lamp_bench.reports.sequential_tables import sequential_sections
# The table model lives in table_model; other modules import it from here too.
from lamp_bench.reports.table_model import Delta, Row, RowSpec, Section, Table
from lamp_bench.results import paper
from lamp_bench.results.aggregate import PROFILE_COMPONENTS, Column, Profile, Provenance

__all__ = ["CLUSTER_NOTE", "Context", "Delta", "Row", "RowSpec", "Section", "Table", "build_sections", "holm_rows",
           "load_paper_numbers", "provenance_section", "rate_tables", "sequential_sections"]

PAPER_FILE = Path(__file__).with_name("paper_numbers.json")

LIBERO_SUITES, PLUS_SUITE, PLUS_CATEGORIES = paper.LIBERO_SUITES, paper.LIBERO_PLUS_SUITE, paper.LIBERO_PLUS_CATEGORIES
SIMPLER_SUITE = paper.SIMPLER_SUITE
SIMPLER_TASKS = (("spoon", ("spoon",)), ("carrot", ("carrot",)), ("cube (stack)", ("cube", "stack")),
                 ("eggplant", ("eggplant",)))
SIMPLER_METRICS = (("success", "success"), ("info.partial_success", "grasp (partial success)"),
                   ("info.consecutive_grasp", "consecutive grasp"))
# Row order of methods: baselines, ablations, then the proposed model; unknown policies last.
POLICY_ORDER = ("openvla", "no-motion", "ungated", "steps-1", "steps-5", "steps-10", "midas", "zoedepth", "dav2",
                "sim-depth", "lamp", "oracle", "noop")
BASELINE_POLICIES = ("openvla", "no-motion")
# The ablation tables are defined once, in results.paper (sweeps/paper.toml runs the same tables):
# (paper key, title, stub, columns, levels as (paper key, row name, policies that provide it, first match
# wins), proposed level)
ABLATIONS = tuple((t.key, t.title, t.stub, t.columns, tuple((v.key, v.name, v.policies) for v in t.levels),
                   t.proposed) for t in paper.ABLATIONS)
ABLATION_ONLY = {t.key: paper.ablation_only(t) for t in paper.ABLATIONS}
# suite provenance keys (suites record them under provenance["suite"]) that tables repeat in their notes
PROVENANCE_NOTE_KEYS = re.compile(r"suite\.(assets|assets?_identity|comparable|\w*note\w*|\w*warning\w*|backend)")


def load_paper_numbers(path: Path = PAPER_FILE) -> dict[str, Any]:
    return json.loads(path.read_text())


@dataclass
class Context:
    frame: pd.DataFrame
    provenance: Provenance
    paper: dict[str, Any]
    show_paper: bool
    baseline: str | None
    label_policy: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        frame = self.frame
        if not frame.empty:
            policies = frame.groupby("label", observed=True)["policy"].agg(lambda s: s.mode().iat[0])
            self.label_policy = {str(k): str(v) for k, v in policies.items()}

    def labels(self, suites: Sequence[str]) -> list[str]:
        present = {str(label) for label in self.frame.loc[self.frame["suite"].isin(list(suites)), "label"].unique()}
        order = {p: i for i, p in enumerate(POLICY_ORDER)}
        return sorted(present, key=lambda label: (order.get(self.label_policy.get(label), len(order)), label))

    def reference(self, labels: Sequence[str]) -> str | None:
        if self.baseline is not None:
            return self.baseline if self.baseline in labels else None
        for policy in BASELINE_POLICIES:
            for label in labels:
                if self.label_policy.get(label) == policy:
                    return label
        return None

    def paper_method(self, label: str) -> str | None:
        return self.paper.get("policy_to_method", {}).get(self.label_policy.get(label))


def _label_specs(ctx: Context, labels: list[str]) -> list[RowSpec]:
    return [RowSpec(label, {"label": label}, label, ctx.paper_method(label)) for label in labels]


def _suite_notes(ctx: Context, suites: Sequence[str], versions: Sequence[str], mujoco: bool = False) -> list[str]:
    """What the asset packs, simulator versions and suite provenance say about comparability (one line per
    distinct statement, naming the suites it holds for). mujoco: include MuJoCo's LIBERO warning."""
    found: dict[str, list[str]] = {}
    for suite in suites:
        fields = ctx.provenance.suites.get(suite)
        if not fields:
            continue
        for key, counter in sorted(fields.items()):
            if PROVENANCE_NOTE_KEYS.fullmatch(key) or mujoco and key == "mujoco_warning":
                for value in counter:
                    text = f"{key.removeprefix('suite.')}: {value}"
                    if key == "suite.comparable" and value in ("true", "false"):
                        text = f"comparable with published results: {'yes' if value == 'true' else 'NO'}"
                    found.setdefault(text, []).append(suite)
        stack = [f"{name} {', '.join(fields[f'versions.{name}'])}" for name in versions if f"versions.{name}" in fields]
        if stack:
            found.setdefault(f"simulator versions: {'; '.join(stack)}", []).append(suite)
    return [f"{', '.join(names)}: {text}" for text, names in found.items()]


def libero_average(name: str = "Average") -> Column:
    suites = tuple(LIBERO_SUITES)
    return Column(name, {"suite": suites}, strata="suite", required=suites)


def libero_section(ctx: Context) -> Section | None:
    labels = ctx.labels(list(LIBERO_SUITES))
    if not labels:
        return None
    columns = [Column(name, {"suite": suite}) for suite, name in LIBERO_SUITES.items()] + [libero_average()]
    reference = ctx.reference(labels)
    tables = rate_tables(ctx, "libero", "LIBERO", "Method", _label_specs(ctx, labels), columns,
                         ctx.paper.get("libero"), labels.index(reference) if reference else None)
    notes = ["Average = mean of the four suite rates (as the paper), shown only when all four were run."]
    notes += _suite_notes(ctx, list(LIBERO_SUITES), ("mujoco", "robosuite", "libero"), mujoco=True)
    return Section("libero", "LIBERO", tables, notes)


def libero_plus_section(ctx: Context) -> Section | None:
    frame = ctx.frame
    plus = frame[frame["suite"] == PLUS_SUITE]
    if plus.empty:
        return None
    combos = plus.groupby(["label", "_backend"], observed=True).size().index.tolist()
    labels = ctx.labels([PLUS_SUITE])
    specs = [RowSpec(f"{label} [{backend}]", {"label": label, "_backend": backend}, label, ctx.paper_method(label),
                     group=backend) for label in labels for (owner, backend) in combos if owner == label]
    categories = list(PLUS_CATEGORIES) + sorted(set(plus["_category"]) - set(PLUS_CATEGORIES))
    base = {"suite": PLUS_SUITE}
    columns = [Column(c, {**base, "_category": c}) for c in categories] + [Column("Total", base)]
    reference = ctx.reference(labels)
    ref_index = next((i for i, s in enumerate(specs) if s.label == reference), None)
    tables = rate_tables(ctx, "libero_plus", "LIBERO-Plus (OOD perturbations)", "Method [backend]", specs, columns,
                         ctx.paper.get("libero_plus"), ref_index)
    levels = sorted(plus["info.difficulty_level"].dropna().unique()) if "info.difficulty_level" in plus else []
    if levels:
        level_columns = [Column(f"level {v:g}" if isinstance(v, float) else f"level {v}",
                                {**base, "info.difficulty_level": v}) for v in levels] + [Column("Total", base)]
        tables += rate_tables(ctx, "libero_plus_levels", "LIBERO-Plus by difficulty level", "Method [backend]",
                              specs, level_columns, None, None)
    size = ctx.paper.get("libero_plus_tasks")
    notes = ["Total = success over all evaluated LIBERO-Plus episodes (LIBERO-Plus's own definition, one trial "
             "per task); it is the single OOD number the paper reports ('LIBERO-Plus (OOD)')."]
    for spec in specs:
        rows = (plus["label"] == spec.label) & (plus["_backend"] == spec.where["_backend"])
        tasks = plus.loc[rows, "task_id"].nunique()
        notes.append(f"{spec.name}: {tasks:,} distinct tasks" + (f" of the benchmark's {size:,}" if size else "")
                     + (" (a subset: Total is over the evaluated tasks only)" if size and tasks < size else ""))
    notes.append("[backend] = the LIBERO-Plus implementation that produced the row (each record's info.backend: "
                 "'official' or 'lamp-bench'); rows of different backends are not interchangeable and are not "
                 "tested against each other.")
    notes += _suite_notes(ctx, [PLUS_SUITE], ("mujoco", "robosuite", "libero"), mujoco=True)
    return Section("libero_plus", "LIBERO-Plus", tables, notes)


def simpler_task(name: str) -> str:
    lowered = str(name).lower()
    for short, words in SIMPLER_TASKS:
        if any(w in lowered for w in words):
            return short
    return str(name)


def simpler_section(ctx: Context) -> Section | None:
    frame = ctx.frame
    sim = frame[frame["suite"] == SIMPLER_SUITE]
    if sim.empty:
        return None
    labels = ctx.labels([SIMPLER_SUITE])
    canonical = [short for short, _ in SIMPLER_TASKS]
    tasks = canonical + sorted(set(sim["_task"]) - set(canonical))
    reference = ctx.reference(labels)
    tables = []
    for outcome, metric in SIMPLER_METRICS:
        if outcome not in sim or sim[outcome].isna().all():
            continue
        base = {"suite": SIMPLER_SUITE}
        columns = [Column(t, {**base, "_task": t}, outcome=outcome) for t in tasks]
        columns.append(Column("Average", {**base, "_task": tuple(canonical)}, outcome=outcome, strata="_task",
                              required=tuple(canonical)))
        paper = ctx.paper.get("simpler_widowx") if outcome == "success" else None
        tables += rate_tables(ctx, f"simpler_{outcome.removeprefix('info.')}", f"SimplerEnv-WidowX: {metric}",
                              "Method", _label_specs(ctx, labels), columns, paper,
                              labels.index(reference) if reference else None)
    notes = ["Average = mean of the four task rates, shown only when all four were run. The paper reports "
             "one SimplerEnv-WidowX number per method without defining it further; it is placed under the "
             "success Average.",
             "Grasp (partial success) = the object was grasped at some point; consecutive grasp = grasped for "
             "consecutive steps (SimplerEnv's metrics)."]
    notes += _suite_notes(ctx, [SIMPLER_SUITE], ("mani-skill", "sapien"))
    return Section("simpler_widowx", "SimplerEnv-WidowX", tables, notes)


def ablation_sections(ctx: Context) -> list[Section]:
    evaluated = ctx.labels([*LIBERO_SUITES, PLUS_SUITE])  # a label run elsewhere only (a WidowX model) has no row
    label_policy = {label: ctx.label_policy[label] for label in evaluated}
    present = set(label_policy.values())
    columns = {"LIBERO Avg": libero_average("LIBERO Avg"), "LIBERO-Plus": Column("LIBERO-Plus", {"suite": PLUS_SUITE})}
    sections = []
    for key, title, stub, column_names, levels, proposed in ABLATIONS:
        if not ABLATION_ONLY[key] & present:
            continue
        specs, ref_index = [], None
        for level, name, policies in levels:
            policy = next((p for p in policies if p in present), None)
            labels = sorted(label for label, p in label_policy.items() if p == policy) if policy else []
            if not labels:
                specs.append(RowSpec(name, {}, None, level, missing=f"no label of policy {' or '.join(policies)}"))
                continue
            for label in labels:
                if level == proposed and ref_index is None:
                    ref_index = len(specs)
                specs.append(RowSpec(f"{name}: {label}", {"label": label}, label, level))
        tables = rate_tables(ctx, key, title, stub, specs, [columns[c] for c in column_names], ctx.paper.get(key),
                             ref_index, {level: name for level, name, _ in levels}, holm=True)
        notes = ["LIBERO Avg = mean of the four LIBERO suite rates (needs all four); LIBERO-Plus = Total over "
                 "all evaluated LIBERO-Plus episodes. Each row names the label that supplies it."]
        notes += stand_in_notes(ctx, [spec.label for spec in specs if spec.label])
        sections.append(Section(key, title, tables, notes, plot="steps" if key == "ablation_steps" else "bars"))
    return sections


def stand_in_notes(ctx: Context, labels: Sequence[str]) -> list[str]:
    """A row whose depth estimator ran with fitted stand-in weights says so (its episodes' policy_config
    names them): such a row tests the pipeline, not the published estimator."""
    notes = []
    for label in labels:
        for text in ctx.provenance.labels.get(label, {}).get("policy_config", {}):
            depth = (json.loads(text) or {}).get("depth_estimator") or {}
            if depth.get("stand_in"):
                notes.append(f"{label}: its {depth.get('source')} depth weights (hash "
                             f"{str(depth.get('weights_hash'))[:16]}) are {depth['stand_in']}; the row tests the "
                             f"pipeline, not the published estimator")
                break
    return notes


def other_section(ctx: Context) -> Section | None:
    known = set(LIBERO_SUITES) | {PLUS_SUITE, SIMPLER_SUITE}
    suites = sorted(set(ctx.frame["suite"]) - known)
    if not suites:
        return None
    labels = ctx.labels(suites)
    tables = rate_tables(ctx, "other", "Other suites", "Method", _label_specs(ctx, labels),
                         [Column(s, {"suite": s}) for s in suites], None, None)
    return Section("other", "Other suites", tables, _suite_notes(ctx, suites, ("mujoco", "mani-skill", "sapien")))


def speed_section(profiles: list[Profile], paper: dict[str, Any], show_paper: bool) -> Section | None:
    if not profiles:
        return None
    found = {k for p in profiles for k in p.components_ms}
    components = [c for c in PROFILE_COMPONENTS if c in found] + sorted(found - set(PROFILE_COMPONENTS))
    columns = [f"{c} ms" for c in components] + ["total ms", "× no-motion"]
    baselines = {(p.preset, p.batch): p.total_ms for p in profiles if p.policy == "no-motion"}
    rows, notes = [], []
    for p in profiles:
        ratio = p.ratio_to_no_motion
        if ratio is None and (p.preset, p.batch) in baselines:
            ratio = p.total_ms / baselines[(p.preset, p.batch)]
        name = f"{p.policy} ({p.preset or 'default'}, batch {p.batch if p.batch is not None else '?'})"
        method = paper.get("policy_to_method", {}).get(p.policy)
        rows.append(Row(name, "profile", [p.components_ms.get(c) for c in components] + [p.total_ms, ratio],
                        ref=method))
        if p.extra:
            notes.append(f"{name}: " + ", ".join(f"{k}={v}" for k, v in sorted(p.extra.items())))
        gaps = [c for c in components if c not in p.components_ms]
        if gaps:
            notes.append(f"– {name}: no timing for {', '.join(gaps)} (component absent or not measured)")
        if ratio is None:
            notes.append(f"– {name}: no ratio (no ratio_to_no_motion in the file and no no-motion profile of "
                         "the same preset and batch)")
    published = paper.get("speed", {})
    if show_paper and published:
        for method, values in published.items():
            if isinstance(values, dict):
                rows.append(Row(f"paper: {method}", "paper",
                                [None] * len(components) + [values.get("total_ms"), values.get("ratio")], ref=method))
        for row in [r for r in rows if r.kind == "profile" and r.ref in published]:
            ratio, paper_ratio = row.cells[-1], published[row.ref].get("ratio")
            if ratio is not None and paper_ratio is not None:
                rows.append(Row(f"Δ {row.name} − paper {row.ref}", "delta",
                                [None] * (len(columns) - 1) + [Delta(ratio - paper_ratio, True, 2, "×")], ref=row.ref))
        notes.append(f"Paper timings are approximate ('~') and measured on {published.get('hardware')}; compare "
                     "ratios, not milliseconds. The paper's baseline is OpenVLA-7B, whose counterpart here is "
                     "no-motion (LaMP with the motion pathway off).")
    return Section("speed", "Inference speed", [Table("speed", "Inference speed per action step", "Policy",
                                                      columns, rows, notes)], [], plot="latency")


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """Derived columns the layouts select on (missing labels made explicit, SimplerEnv short task names)."""
    frame = frame.copy()
    for column, source, default in (("_backend", "info.backend", "unspecified"),
                                    ("_category", "info.category", "(no category)")):
        values = frame[source].astype(object).fillna(default) if source in frame else default
        frame[column] = pd.Series(values, index=frame.index).astype("category")
    names = (frame["task_name"] if "task_name" in frame else frame["task_id"]).astype(object)
    mapping = {n: simpler_task(n) for n in names.dropna().unique()}
    frame["_task"] = names.map(mapping).astype("category")
    for column in ("info.partial_success", "info.consecutive_grasp"):
        if column in frame:
            frame[column] = frame[column].astype("boolean")
    return frame


def build_sections(frame: pd.DataFrame, provenance: Provenance, profiles: list[Profile], paper: dict[str, Any],
                   show_paper: bool = True, baseline: str | None = None) -> list[Section]:
    sections: list[Section | None] = []
    if not frame.empty:
        ctx = Context(prepare(frame), provenance, paper, show_paper, baseline)
        sections += [libero_section(ctx), libero_plus_section(ctx), simpler_section(ctx), *ablation_sections(ctx),
                     other_section(ctx)]
    sections.append(speed_section(profiles, paper, show_paper))
    return [s for s in sections if s is not None]


def _values(counter, short: int | None = None, limit: int = 4) -> str:
    """'value (count)' for each distinct value, most common first."""
    items = counter.most_common()
    text = [f"{v[:short] if short and len(v) > short else v} ({n:,})" for v, n in items[:limit]]
    return "; ".join(text) + (f"; … {len(items) - limit} more" if len(items) > limit else "")


def provenance_section(prov: Provenance) -> Section:
    """Which code, weights, assets and simulator versions produced the numbers, with warnings on mixtures."""
    method_rows, warnings = [], []
    for label in sorted(prov.labels):
        fields = prov.labels[label]
        episodes = sum(fields["policy"].values())
        method_rows.append(Row(label, "text", [_values(fields["policy"]), f"{episodes:,}",
                                               _values(fields["checkpoint_hash"], 16),
                                               _values(fields["code_commit"], 18),
                                               _values(fields["policy_config"], 120, 2)]))
        if len(fields["checkpoint_hash"]) > 1:
            warnings.append(f"label {label} mixes {len(fields['checkpoint_hash'])} checkpoints")
        if len(fields["code_commit"]) > 1:
            warnings.append(f"label {label} was run from {len(fields['code_commit'])} code commits")
        if any(c.endswith("-dirty") for c in fields["code_commit"]):
            warnings.append(f"label {label} was run from a commit with uncommitted changes (-dirty)")
    tables = [Table("provenance_methods", "Methods", "Label",
                    ["policy", "episodes", "checkpoint sha256", "code commit", "policy config"], method_rows)]
    for suite in sorted(prov.suites):
        fields = prov.suites[suite]
        rows = [Row(key, "text", [_values(counter, 200)]) for key, counter in sorted(fields.items())]
        tables.append(Table(f"provenance_{suite}", f"Suite {suite}", "Field", ["values (episodes)"], rows))
        for key, counter in fields.items():
            if key.startswith("versions.") and len(counter) > 1:
                warnings.append(f"{suite} episodes mix {key.removeprefix('versions.')} versions: {', '.join(counter)}")
    if len(prov.hosts) > 0:
        warnings.insert(0, f"hosts: {_values(prov.hosts, limit=6)}")
    return Section("provenance", "Provenance", tables, warnings, plot="none")
