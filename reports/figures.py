"""matplotlib figures of a report's sections (PNG and SVG; the object API, so no GUI backend is touched)."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lamp_bench.reports import comparisons
from lamp_bench.reports.layouts import Section, Table
from lamp_bench.results.aggregate import Cell

STYLE = {"svg.hashsalt": "lamp-bench", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False}
PAPER_MARKER = dict(marker="D", color="black", markersize=4, linestyle="none", label="paper")
SUMMARY_COLUMNS = ("Average", "Total")  # set apart from the per-suite/per-category bars by a rule
FOREST_COLOURS = {"up": "#1a7f37", "down": "#cf222e", "open": "#6e7781"}  # settled gain / settled loss / not settled


def _rate_tables(section: Section) -> list[Table]:
    return [t for t in section.tables if not t.key.endswith("_differences") and t.key != "libero_plus_levels"]


def _paper_values(table: Table) -> dict[str, list]:
    return {row.ref: row.cells for row in table.rows if row.kind == "paper"}


def _error_bars(rates: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """matplotlib's (2, N) yerr: distances below and above each rate, never negative (a cell at 0% or
    100% has a zero-length side) and zero where a cell has no number."""
    return np.nan_to_num(np.vstack([rates - low, high - rates])).clip(min=0.0)


def _bars(ax, table: Table) -> None:
    measured = [r for r in table.rows if r.kind == "measured"]
    paper = _paper_values(table)
    x = np.arange(len(table.columns))
    width = 0.8 / max(len(measured), 1)
    drew_paper = False
    for i, row in enumerate(measured):
        pos = x - 0.4 + width * (i + 0.5)
        rates = np.array([c.estimate.rate * 100 if isinstance(c, Cell) and c.estimate else np.nan for c in row.cells])
        low = np.array([c.estimate.low * 100 if isinstance(c, Cell) and c.estimate else np.nan for c in row.cells])
        high = np.array([c.estimate.high * 100 if isinstance(c, Cell) and c.estimate else np.nan for c in row.cells])
        ax.bar(pos, np.nan_to_num(rates), width * 0.92, label=row.name,
               yerr=_error_bars(rates, low, high), capsize=2, error_kw={"lw": 0.8})
        for p, r in zip(pos, rates):
            if np.isnan(r):  # no episodes: a dash, never an empty bar that reads as 0
                ax.text(p, 1, "–", ha="center", va="bottom", fontsize=7, color="grey")
            elif r == 0:  # measured 0%: a bar of no height, so say it
                ax.text(p, 1, "0", ha="center", va="bottom", fontsize=7)
        published = paper.get(row.ref)
        if published:
            values = np.array([v if isinstance(v, (int, float)) else np.nan for v in published], dtype=float)
            if not np.isnan(values).all():
                ax.plot(pos, values, **{**PAPER_MARKER, "label": "paper" if not drew_paper else None})
                drew_paper = True
    for j, column in enumerate(table.columns):
        if column in SUMMARY_COLUMNS and j > 0:
            ax.axvline(j - 0.5, color="#999", lw=0.6, ls=":")
    crowded = len(table.columns) > 5
    ax.set_xticks(x, table.columns, rotation=20 if crowded else 0, ha="right" if crowded else "center")
    ax.set_ylim(0, 105)
    ax.set_ylabel("rate %")
    ax.set_title(table.title, fontsize=10, loc="left")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _steps(fig: Figure, table: Table) -> None:
    measured = [r for r in table.rows if r.kind == "measured"]
    paper = {row.ref: row.cells for row in table.rows if row.kind == "paper"}
    axes = fig.subplots(1, len(table.columns), squeeze=False)[0]
    for j, (ax, column) in enumerate(zip(axes, table.columns)):
        first: dict[str, Cell] = {}  # one point per level: its first label
        for row in measured:
            cell = row.cells[j]
            if isinstance(cell, Cell) and cell.estimate and row.ref not in first:
                first[row.ref] = cell
        points = sorted(((float(k), c) for k, c in first.items()), key=lambda p: p[0])
        if points:
            xs = np.array([p[0] for p in points])
            rate = np.array([p[1].estimate.rate for p in points]) * 100
            err = _error_bars(rate, np.array([p[1].estimate.low for p in points]) * 100,
                              np.array([p[1].estimate.high for p in points]) * 100)
            ax.errorbar(xs, rate, yerr=err, marker="o", capsize=3, label="measured (95% interval)")
            for x, r, (_, cell) in zip(xs, rate, points):
                ax.annotate(f"n={cell.estimate.n}", (x, r), textcoords="offset points", xytext=(6, -10),
                            fontsize=7, color="#444")
        published = sorted((float(k), v[j]) for k, v in paper.items() if isinstance(v[j], (int, float)))
        if published:
            ax.plot(*zip(*published), "k--", marker="D", markersize=4, label="paper")
        ax.set_xticks([0, 1, 5, 10])
        ax.set_xlabel("motion-expert Euler steps (0 = no motion prior)")
        ax.set_ylabel(f"{column} success %")
        ax.set_ylim(0, 105)
        ax.legend(fontsize=7, frameon=False, loc="best")
    fig.suptitle(table.title, fontsize=10, x=0.01, ha="left")


def _latency(ax, table: Table) -> None:
    rows = [r for r in table.rows if r.kind == "profile"]
    components = [c for c in table.columns if c.endswith(" ms") and c != "total ms"]
    y = np.arange(len(rows))
    left = np.zeros(len(rows))
    for j, component in enumerate(components):
        values = np.array([r.cells[j] if r.cells[j] is not None else 0.0 for r in rows], dtype=float)
        ax.barh(y, values, left=left, label=component.removesuffix(" ms"))
        left += values
    totals = [r.cells[len(components)] for r in rows]
    ax.plot(totals, y, "k|", markersize=14, label="total (measured)")
    ax.set_yticks(y, [r.name for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("ms per action step")
    ax.set_title(table.title, fontsize=10, loc="left")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _forest(ax, items: list[comparisons.Comparison]) -> None:
    """One line per comparison, grouped by table, top to bottom in report order; numbers on the right."""
    y, ticks, names, headers = 0.0, [], [], []
    corrected = {(c.group, c.reference) for c in items if getattr(c.difference, "p_adjusted", None) is not None}
    last = None
    for item in items:
        if (item.group, item.reference) != last:
            y += 0.6 if last is not None else 0.0
            holm = "; Holm-adjusted per column" if (item.group, item.reference) in corrected else ""
            headers.append((y, f"{item.group} (vs {item.reference}{holm})"))
            y += 1.0
            last = (item.group, item.reference)
        d = item.difference
        diff, low, high = 100 * d.diff, 100 * d.low, 100 * d.high
        tone = "open" if not item.verdict.settled else ("up" if diff >= 0 else "down")
        colour = FOREST_COLOURS[tone]
        ax.plot([low, high], [y, y], color=colour, lw=1.6, solid_capstyle="butt")
        ax.plot([diff], [y], marker="o" if d.paired else "s", markersize=5.5, color=colour,
                markerfacecolor=colour if item.verdict.settled else "white", markeredgewidth=1.3, linestyle="none")
        numbers = f"{diff:+.1f} [{low:+.1f}, {high:+.1f}]  {item.verdict.text}"
        numbers += f"  n={d.n_pairs} paired" if d.paired else f"  n={d.n_a}/{d.n_b}"
        ax.text(1.01, y, numbers, transform=ax.get_yaxis_transform(), va="center", fontsize=7, color=colour)
        ticks.append(y)
        names.append(f"{item.name} · {item.column}")
        y += 1.0
    ax.axvline(0, color="black", lw=0.8)
    for hy, text in headers:
        ax.text(0.005, hy, text, transform=ax.get_yaxis_transform(), ha="left", va="center", fontsize=8,
                fontweight="bold", bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
    ax.set_yticks(ticks, names, fontsize=7.5)
    ax.set_ylim(y - 0.4, -0.8)
    lows = [100 * c.difference.low for c in items]
    highs = [100 * c.difference.high for c in items]
    pad = 5.0  # room for a mark at +-100 points
    ax.set_xlim(max(-100.0 - pad, min(min(lows), 0.0) - pad), min(100.0 + pad, max(max(highs), 0.0) + pad))
    ax.set_xlabel("difference in success rate (percentage points), 95% interval")
    ax.spines["left"].set_visible(False)
    ax.tick_params(axis="y", length=0)
    ax.grid(axis="x", color="#eee", lw=0.6)
    ax.set_axisbelow(True)
    legend = [Line2D([], [], color=FOREST_COLOURS["up"], marker="o", label="settled, A better"),
              Line2D([], [], color=FOREST_COLOURS["down"], marker="o", label="settled, A worse"),
              Line2D([], [], color=FOREST_COLOURS["open"], marker="o", markerfacecolor="white", label="not settled"),
              Line2D([], [], color="black", marker="s", linestyle="none", markerfacecolor="white", label="unpaired")]
    ax.legend(handles=legend, fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, frameon=False)


def forest(sections: list[Section]) -> Figure | None:
    """The forest plot of every comparison in the report's differences tables (None when there is none)."""
    items = comparisons.gather(sections)
    if not items:
        return None
    groups = len({(c.group, c.reference) for c in items})
    fig = Figure(figsize=(11, 0.22 * (len(items) + 1.6 * groups) + 1.3), layout="constrained")
    _forest(fig.add_subplot(), items)
    return fig


def draw(section: Section) -> Figure | None:
    if section.plot == "steps":
        table = _rate_tables(section)[0]
        fig = Figure(figsize=(4.2 * len(table.columns), 3.4), layout="constrained")
        _steps(fig, table)
        return fig
    if section.plot == "latency":
        table = section.tables[0]
        profiles = sum(r.kind == "profile" for r in table.rows)
        fig = Figure(figsize=(9, 0.35 * max(profiles, 2) + 1.8), layout="constrained")
        _latency(fig.add_subplot(), table)
        return fig
    if section.plot != "bars":
        return None
    tables = _rate_tables(section)
    if not tables:
        return None
    fig = Figure(figsize=(max(6.0, 1.3 * len(tables[0].columns) + 2), 3.6 * len(tables)), layout="constrained")
    for ax, table in zip(fig.subplots(len(tables), 1, squeeze=False)[:, 0], tables):
        _bars(ax, table)
    return fig


def render_figures(sections: list[Section], folder: Path) -> dict[str, tuple[Path, Path]]:
    """section key -> (png, svg) written under `folder` (a forest section's plot gathers all the others)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    with matplotlib.rc_context(STYLE):
        for section in sections:
            fig = forest(sections) if section.plot == "forest" else draw(section)
            if fig is None:
                continue
            png, svg = folder / f"{section.key}.png", folder / f"{section.key}.svg"
            fig.savefig(png, dpi=100)
            fig.set_layout_engine("none")  # keep the layout computed for the PNG: it is the costly part
            fig.savefig(svg)
            out[section.key] = (png, svg)
    return out
