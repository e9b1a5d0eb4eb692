"""Every comparison the report's difference tables hold, gathered for one forest plot.

The differences come from the tables as computed (rows of kind "difference", cells of type
`results.stats.Difference`); nothing is recomputed here. Whether a comparison counts as settled is read
from the Difference itself: a sequential `decided` flag when the evaluation stopped on one, else a
multiplicity-adjusted p-value when the table corrected for several comparisons, else its own test.
"""
from __future__ import annotations

from dataclasses import dataclass

from lamp_bench.reports.layouts import Section
from lamp_bench.results.stats import ALPHA, Difference

DIFFERENCES_SUFFIX = "_differences"
TITLE_SPLIT = ": differences vs "
ADJUSTED_P_NAMES = ("p_adjusted", "adjusted_p")  # whichever name the correction stores it under


@dataclass(frozen=True)
class Verdict:
    settled: bool  # decided, or significant after the table's correction
    text: str  # "decided", "undecided", "significant (adjusted p=0.012)", "not significant (p=0.3)", ...


@dataclass(frozen=True)
class Comparison:
    group: str  # the table the comparison sits in: "LIBERO", "SimplerEnv-WidowX: success", ...
    reference: str  # what every row of that table is tested against
    name: str  # the row: "lamp − openvla"
    column: str  # "Spatial", "Average", ...
    difference: Difference
    verdict: Verdict


def verdict(difference: Difference) -> Verdict:
    """Sequential decision first, then a multiplicity-adjusted p, then the comparison's own test."""
    decided = getattr(difference, "decided", None)
    if decided is not None:
        return Verdict(bool(decided), "decided" if decided else "undecided")
    adjusted = next((getattr(difference, name) for name in ADJUSTED_P_NAMES
                     if getattr(difference, name, None) is not None), None)
    if adjusted is not None:
        settled = adjusted < ALPHA
        return Verdict(settled, f"{'significant' if settled else 'not significant'} (adjusted p={adjusted:.2g})")
    settled = bool(difference.significant)
    if difference.p_value is not None:  # McNemar when paired; unpaired ones may carry the inverted interval's
        return Verdict(settled, f"{'significant' if settled else 'not significant'} (p={difference.p_value:.2g})")
    return Verdict(settled, "interval excludes 0" if settled else "interval includes 0")


def gather(sections: list[Section]) -> list[Comparison]:
    """The comparisons of every differences table, in report order (tables, rows, columns)."""
    found = []
    for section in sections:
        for table in section.tables:
            if not table.key.endswith(DIFFERENCES_SUFFIX):
                continue
            group, _, rest = table.title.partition(TITLE_SPLIT)
            reference = rest.removesuffix(" (percentage points)")
            for row in table.rows:
                if row.kind != "difference":
                    continue
                for column, cell in zip(table.columns, row.cells):
                    if isinstance(cell, Difference):
                        found.append(Comparison(group, reference, row.name, column, cell, verdict(cell)))
    return found


def section(sections: list[Section]) -> Section | None:
    """A section holding only the forest plot (drawn by figures.py) and what its marks mean."""
    found = gather(sections)
    if not found:
        return None
    settled = sum(c.verdict.settled for c in found)
    paired = sum(c.difference.paired for c in found)
    notes = [f"{len(found)} comparison(s) from the differences tables below ({paired} paired on shared episodes, "
             f"{len(found) - paired} unpaired); {settled} settled, {len(found) - settled} not.",
             "Each line: the difference in percentage points with its 95% interval. Filled mark: settled "
             "(decided by the sequential test where the run used one, else significant at 0.05 after the "
             "table's multiple-comparison correction where it states one, else by the comparison's own test); "
             "open mark: not settled. Circle: paired; square: unpaired."]
    return Section("comparisons", "All comparisons at a glance", [], notes, plot="forest")
