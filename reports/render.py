"""Text of tables and reports: Markdown, LaTeX, CSV (one row per cell, numbers unformatted) and HTML."""
from __future__ import annotations

import base64
import csv
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lamp_bench.reports import gallery
from lamp_bench.reports.layouts import Delta, Section, Table
from lamp_bench.results.aggregate import MIN_EPISODES, Cell
from lamp_bench.results.stats import Difference

LEGEND = (f"Cells: success rate in % [95% Wilson interval] n = episodes; averages: mean of the per-suite (or "
          f"per-task) rates with a variance-combination Wilson interval. † fewer than {MIN_EPISODES} episodes "
          f"(unreliable). – no number (the note under the table says why; never read as 0). Paper rows: published "
          f"numbers; Δ rows: measured minus published (percentage points), '(outside CI)' when the published "
          f"value lies outside the measured 95% interval.")


@dataclass
class Report:
    title: str
    results_dir: Path
    generated_at: str
    overview: list[str]  # lines about the data behind the report
    sections: list[Section]
    figures: dict[str, tuple[Path, Path]]  # section key -> (png, svg)
    videos: list[gallery.Clip]  # recorded rollouts, from the records' info.video


def cell_text(value: Any, column: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, Cell):
        incomplete = "‡" if value.incomplete else ""  # unresolved env errors: never a silent score
        if value.estimate is None:
            return f"incomplete{incomplete}" if value.incomplete else "–"
        e = value.estimate
        return (f"{100 * e.rate:.1f} [{100 * e.low:.1f}, {100 * e.high:.1f}] n={e.n}" + ("†" if value.flagged else "")
                + incomplete)
    if isinstance(value, Delta):
        return f"{value.value:+.{value.digits}f}{value.suffix}" + ("" if value.inside else " (outside CI)")
    if isinstance(value, Difference):
        star = "*" if value.significant else ""
        text = f"{100 * value.diff:+.1f} [{100 * value.low:+.1f}, {100 * value.high:+.1f}]"
        if value.paired:
            return f"{text} p={value.p_value:.3g}{star} n={value.n_pairs} paired"
        return f"{text}{star} unpaired n={value.n_a}/{value.n_b}"
    if isinstance(value, float):
        return f"{value:.2f}×" if column.startswith("×") else f"{value:.1f}"
    return str(value)


# --- CSV ---------------------------------------------------------------------------------------------------

CSV_FIELDS = ("section", "table", "row", "kind", "label", "column", "value", "ci_low", "ci_high", "episodes",
              "successes", "strata", "flagged", "errors", "env_errors", "incomplete", "p_value", "paired", "n_pairs", "significant", "note", "text")


def _csv_record(section: Section, table: Table, row, column: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"section": section.key, "table": table.key, "row": row.name, "kind": row.kind,
                           "label": row.label or "", "column": column, "text": cell_text(value, column)}
    if isinstance(value, Cell):
        if value.estimate is not None:
            e = value.estimate
            out.update(value=100 * e.rate, ci_low=100 * e.low, ci_high=100 * e.high, episodes=e.n,
                       successes=value.successes if value.successes is not None else "", strata=value.strata,
                       flagged=value.flagged)
        out.update(errors=value.errors, env_errors=value.env_errors, incomplete=value.incomplete,
                   note=value.missing or "")
    elif isinstance(value, Delta):
        out.update(value=value.value, note="" if value.inside else "published value outside the measured 95% CI")
    elif isinstance(value, Difference):
        out.update(value=100 * value.diff, ci_low=100 * value.low, ci_high=100 * value.high, paired=value.paired,
                   significant=value.significant, p_value=value.p_value if value.paired else "",
                   n_pairs=value.n_pairs or "", episodes="" if value.paired else f"{value.n_a}/{value.n_b}")
    elif isinstance(value, (int, float)):
        out.update(value=value)
    return out


def to_csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_FIELDS, restval="", lineterminator="\n")
    writer.writeheader()
    for section in report.sections:
        for table in section.tables:
            for row in table.rows:
                for column, value in zip(table.columns, row.cells):
                    writer.writerow(_csv_record(section, table, row, column, value))
    return buffer.getvalue()


# --- Markdown ----------------------------------------------------------------------------------------------

def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> list[str]:
    lines = [f"**{table.title}**", "", "| " + " | ".join(_md_escape(h) for h in [table.stub, *table.columns]) + " |",
             "|" + "---|" * (len(table.columns) + 1)]
    for row in table.rows:
        name = f"*{row.name}*" if row.kind in ("paper", "delta") else row.name
        cells = [cell_text(v, c) for c, v in zip(table.columns, row.cells)]
        lines.append("| " + " | ".join(_md_escape(t) for t in [name, *cells]) + " |")
    lines.append("")
    lines += [f"- {_md_escape(n)}" for n in table.notes]
    return lines + ([""] if table.notes else [])


def to_markdown(report: Report, out_dir: Path) -> str:
    lines = [f"# {report.title}", "", *[f"- {line}" for line in report.overview], "", LEGEND, ""]
    for section in report.sections:
        lines += [f"## {section.title}", ""]
        for table in section.tables:
            lines += _md_table(table)
        lines += [f"- {_md_escape(n)}" for n in section.notes] + ([""] if section.notes else [])
        if section.key in report.figures:
            png = report.figures[section.key][0].relative_to(out_dir)
            lines += [f"![{section.title}]({png.as_posix()})", ""]
    lines += gallery.to_markdown(report.videos)
    return "\n".join(lines)


# --- LaTeX -------------------------------------------------------------------------------------------------

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "–": "--", "−": "$-$", "Δ": r"$\Delta$",
        "†": r"$^\dagger$", "×": r"$\times$", "…": r"\dots{}", "·": r"$\cdot$"}


def _tex(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def to_latex(report: Report) -> str:
    lines = [r"\documentclass{article}", r"\usepackage[T1]{fontenc}", r"\usepackage{booktabs}", r"\usepackage{caption}",
             r"\usepackage[landscape,margin=1.5cm]{geometry}", r"\begin{document}",
             rf"\section*{{{_tex(report.title)}}}",
             r"\begin{itemize}", *[rf"\item {_tex(line)}" for line in report.overview], r"\end{itemize}",
             rf"{{\footnotesize {_tex(LEGEND)}}}", ""]
    for section in report.sections:
        lines.append(rf"\subsection*{{{_tex(section.title)}}}")
        for table in section.tables:
            lines += [r"\begin{table}[h]", r"\centering", r"\scriptsize", rf"\caption*{{{_tex(table.title)}}}",
                      r"\begin{tabular}{l" + "l" * len(table.columns) + "}", r"\toprule",
                      " & ".join(_tex(h) for h in [table.stub, *table.columns]) + r" \\", r"\midrule"]
            for row in table.rows:
                name = rf"\textit{{{_tex(row.name)}}}" if row.kind in ("paper", "delta") else _tex(row.name)
                cells = [_tex(cell_text(v, c)) for c, v in zip(table.columns, row.cells)]
                lines.append(" & ".join([name, *cells]) + r" \\")
            lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
            lines += [rf"{{\footnotesize {_tex(n)}}}\par" for n in table.notes]
        lines += [rf"{{\footnotesize {_tex(n)}}}\par" for n in section.notes] + [""]
    lines.append(r"\end{document}")
    return "\n".join(lines) + "\n"


# --- HTML --------------------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1400px;
       color: #222; line-height: 1.4; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 0.3em; font-size: 0.85em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
caption { text-align: left; font-weight: 600; padding: 0.3em 0; }
tr.paper td { color: #666; font-style: italic; background: #fafafa; }
tr.delta td { color: #555; font-size: 0.92em; }
tr.text td { text-align: left; white-space: normal; }
tr.difference td { white-space: normal; min-width: 8em; }
.scroll { overflow-x: auto; }
td.missing { color: #999; }
td.flag { background: #fff4e0; }
td.sig { font-weight: 600; }
ul.notes { font-size: 0.8em; color: #444; margin-top: 0.2em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
.legend { font-size: 0.85em; color: #333; background: #f4f6f8; padding: 0.6em 0.9em; }
"""


def _html_cell(value: Any, column: str) -> str:
    classes = []
    if value is None or (isinstance(value, Cell) and value.estimate is None):
        classes.append("missing")
    if isinstance(value, Cell) and value.flagged:
        classes.append("flag")
    if isinstance(value, Difference) and value.significant:
        classes.append("sig")
    attr = f' class="{" ".join(classes)}"' if classes else ""
    return f"<td{attr}>{html.escape(cell_text(value, column))}</td>"


def _html_table(table: Table) -> list[str]:
    out = [f'<div class="scroll"><table id="{html.escape(table.key)}"><caption>{html.escape(table.title)}</caption>',
           "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in [table.stub, *table.columns])
           + "</tr></thead>",
           "<tbody>"]
    for row in table.rows:
        cells = "".join(_html_cell(v, c) for c, v in zip(table.columns, row.cells))
        out.append(f'<tr class="{row.kind}"><td>{html.escape(row.name)}</td>{cells}</tr>')
    out.append("</tbody></table></div>")
    if table.notes:
        out.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in table.notes) + "</ul>")
    return out


GALLERY_BEFORE = "provenance"  # the rollout gallery goes above the (long) provenance tables


def to_html(report: Report) -> str:
    """One static page: no scripts, figures embedded as base64 PNG, rollout videos linked relatively."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(report.title)}</title><style>{CSS}{gallery.CSS}</style></head><body>",
           f"<h1>{html.escape(report.title)}</h1>",
           "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in report.overview) + "</ul>",
           f'<p class="legend">{html.escape(LEGEND)}</p>', "<nav><ul>"]
    gallery_link = ['<li><a href="#s-videos">Rollout videos</a></li>'] if report.videos else []
    for section in report.sections:
        out += (gallery_link if section.key == GALLERY_BEFORE else [])
        out.append(f'<li><a href="#s-{section.key}">{html.escape(section.title)}</a></li>')
    out.append("</ul></nav>")
    placed = False
    for section in report.sections:
        if section.key == GALLERY_BEFORE:
            out += gallery.to_html(report.videos)
            placed = True
        out.append(f'<section id="s-{section.key}"><h2>{html.escape(section.title)}</h2>')
        for table in section.tables:
            out += _html_table(table)
        if section.notes:
            out.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in section.notes) + "</ul>")
        if section.key in report.figures:
            png = report.figures[section.key][0]
            data = base64.b64encode(png.read_bytes()).decode()
            out.append(f'<figure><img alt="{html.escape(section.title)} figure" src="data:image/png;base64,{data}">'
                       "</figure>")
        out.append("</section>")
    out += [] if placed else gallery.to_html(report.videos)
    out.append(f"<footer><small>generated {html.escape(report.generated_at)} by lamp-bench from "
               f"{html.escape(str(report.results_dir))}</small></footer></body></html>")
    return "\n".join(out)
