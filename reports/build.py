"""`build_report`: a results directory in, tables (md/tex/csv/html) and figures (PNG/SVG) out.

Reads only the results directory: the episode store, profile/*.json and the videos its records name."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from lamp_bench.reports import comparisons, figures, gallery, layouts, lineage, real_world, render
from lamp_bench.results.aggregate import episode_frame, load_profiles, provenance_summary
from lamp_bench.results.errors import ResultsInputError
from lamp_bench.results.store import EpisodeStore

FORMATS = ("md", "tex", "csv", "html")


def parse_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    chosen = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in items if f.strip()))
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise ResultsInputError(f"unknown report format(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(FORMATS)} (e.g. --format md,html)")
    return chosen


def build_report(
    results_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    formats: str | Iterable[str] = ("md", "html"),
    show_paper: bool = True,
    baseline: str | None = None,
) -> list[Path]:
    """Write the report of `results_dir` to `out_dir` (default <results_dir>/report); returns the files written.

    baseline: label every method is tested against (default: the first label of policy openvla, else no-motion).
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results directory {results_dir} does not exist")
    chosen = parse_formats(formats)
    out_dir = Path(out_dir) if out_dir is not None else results_dir / "report"
    store = EpisodeStore(results_dir)
    records = store.records()
    profiles = load_profiles(results_dir)
    trials = real_world.load_trials(results_dir)
    if not records and not profiles and not trials.records:
        raise ResultsInputError(f"{results_dir} holds no episode records ({store.episodes_dir}/*.jsonl), no "
                         "profile/*.json and no trials/*.jsonl; run `lamp-bench run` (or `lamp-bench profile`, "
                         "`lamp-bench trials record`) first")
    episodes = len(records)
    frame = episode_frame(records)
    provenance = provenance_summary(records)
    clips = gallery.clips(frame, results_dir, out_dir)
    lineage_sections = lineage.build_sections(records)  # checkpoint -> training -> demonstrations
    del records  # the frame and the provenance hold what is needed; ~1e5 live dicts make every later GC pass slow
    labels = sorted(map(str, frame["label"].unique())) if not frame.empty else []
    if baseline is not None and baseline not in labels and baseline not in trials.labels:
        raise ResultsInputError(f"baseline {baseline!r} is not a label in {results_dir}; labels: {', '.join(labels)}")
    sections = layouts.build_sections(frame, provenance, profiles, layouts.load_paper_numbers(), show_paper, baseline)
    sections += real_world.build_sections(trials, layouts.load_paper_numbers(), show_paper, baseline)
    sections += layouts.sequential_sections(results_dir)  # `run --until decided` decisions
    overview_plot = comparisons.section(sections)  # the forest plot of every comparison, first on the page
    if overview_plot is not None:
        sections.insert(0, overview_plot)
    if episodes:
        sections.append(layouts.provenance_section(provenance))
    sections += lineage_sections

    out_dir.mkdir(parents=True, exist_ok=True)
    # figures belong to the pages that show them; a csv/tex-only run skips the costly drawing
    drawn = figures.render_figures(sections, out_dir / "figures") if {"md", "html"} & set(chosen) else {}
    errors = int(frame["error"].sum()) if not frame.empty else 0
    env_errors = int(frame["env_error"].sum()) if not frame.empty else 0
    overview = [f"results directory: {results_dir.resolve()}",
                f"{episodes:,} episodes (deduplicated) from {len(store.shards())} shard(s); "
                f"{errors:,} ended in an error and count as failures"
                + (f"; {env_errors:,} ended in an environment error, are in no rate and mark their cells "
                   "incomplete (‡; re-run to retry them)" if env_errors else ""),
                f"labels: {', '.join(labels) or 'none'}; suites: "
                f"{', '.join(sorted(frame['suite'].unique())) if not frame.empty else 'none'}",
                f"{len(profiles)} profile file(s)"] + ([trials.overview] if trials.records else [])
    if "html" in chosen:  # the page shows each embedded video's last frame until it is played
        clips = gallery.with_posters(clips, out_dir)
    report = render.Report(f"lamp-bench report: {results_dir.name}", results_dir.resolve(),
                           datetime.now(timezone.utc).isoformat(timespec="seconds"), overview, sections, drawn,
                           clips)
    written = [path for pair in drawn.values() for path in pair] + [out_dir / c.poster for c in clips if c.poster]
    for fmt in chosen:
        path = out_dir / f"report.{fmt}"
        if fmt == "md":
            path.write_text(render.to_markdown(report, out_dir), encoding="utf-8")
        elif fmt == "tex":
            path.write_text(render.to_latex(report), encoding="utf-8")
        elif fmt == "csv":
            path.write_text(render.to_csv(report), encoding="utf-8")
        else:
            path.write_text(render.to_html(report), encoding="utf-8")
        written.append(path)
    return written
