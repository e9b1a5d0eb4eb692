"""The sections of `run --until decided` evaluations: each sequential comparison, decided or not."""
from __future__ import annotations

from pathlib import Path

from lamp_bench.reports.table_model import Row, Section, Table
from lamp_bench.results import sequential


def sequential_sections(results_dir: Path) -> list[Section]:
    """`run --until decided` comparisons (results/sequential/*.json): decided at n, or undecided at the budget."""
    decisions = sequential.load_decisions(results_dir)
    tables = [Table(f"sequential_{i}_differences", f"Sequential evaluation: differences vs {against} (percentage "
                    "points)", "Comparison", suites, [Row(name, "difference", cells, label) for name, label, cells in rows],
                    ["group-sequential McNemar test, O'Brien-Fleming alpha spending over the planned budget; interval: "
                     "the repeated 95% score interval at the last look; p: the repeated p-value; * decided"])
              for i, (against, suites, rows) in enumerate(sequential.comparison_grid(decisions))]
    return [Section("sequential", "Sequential evaluations", tables, [d.summary() for d in decisions], plot="none")] \
        if tables else []

