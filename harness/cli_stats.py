"""`lamp-bench plan`: episodes per cell a paired comparison needs, and the smallest gap a budget detects."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from lamp_bench.harness.cli import app, console, user_errors
from lamp_bench.harness.config import ConfigError


def parse_pair(text: str, what: str, kind: type = str) -> tuple:
    """'A,B' -> (A, B): exactly two comma-separated values."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"{what} expects two comma-separated values, like {'A,B' if kind is str else '0.80,0.85'}; "
                          f"got {text!r}")
    try:
        return tuple(kind(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{what} expects two numbers, like 0.80,0.85; got {text!r}") from None


def _points(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def plan_table(result, episodes: Optional[int]) -> Table:
    table = Table(title=f"episodes per cell for a paired comparison (α = {result.alpha:g}, power = {result.power:g}, "
                        f"discordance from {result.source})", title_justify="left",
                  caption=f"n per cell = episodes of each policy on that suite (pairs: same task, init state, seed); "
                          "Δ in points; disc. = discordance, the share of pairs where exactly one policy succeeds; "
                          "min Δ = the smallest gap the given episodes detect; "
                          f"seq. = the group-sequential test of `run --until decided` with {result.looks} looks "
                          "(O'Brien-Fleming alpha spending): its budget and its expected stop if Δ is real; fixed = one "
                          "look (McNemar, Connor 1987)", caption_justify="left")
    pilot = result.source == "pilot"
    planned = any(row.delta is not None for row in result.rows)
    columns = ["suite"] + (["pilot n", "pilot Δ"] if pilot else []) + ["disc. %"]
    columns += ["Δ", "fixed n", "seq. max n", "seq. mean n"] if planned else []
    columns += [f"min Δ, n={episodes}", "seq. min Δ"] if episodes is not None else []
    for column in columns:
        table.add_column(column, justify="left" if column == "suite" else "right", no_wrap=column == "suite")
    for row in result.rows:
        cells = [row.name]
        if pilot:
            cells += [str(row.pilot_pairs), _points(row.pilot_difference)]
        cells.append(f"{100 * row.discordance:.1f}")
        if planned:
            cells += [_points(row.delta), str(row.fixed_n), str(row.sequential.budget),
                      f"{row.sequential.expected_n:.0f}"]
        if episodes is not None:
            cells += [_points(row.detectable_fixed), _points(row.detectable_sequential)]
        table.add_row(*cells, style="bold" if len(row.suites) > 1 else None)
    return table


@app.command()
@user_errors
def plan(
    delta: Optional[float] = typer.Option(None, "--delta", help="the gap to detect, a rate difference (0.05 = 5 points)"),
    alpha: float = typer.Option(0.05, "--alpha", help="two-sided significance level"),
    power: float = typer.Option(0.8, "--power", help="chance to detect Δ when it is real"),
    pilot: Optional[Path] = typer.Option(None, "--pilot", help="pilot results directory (discordance per suite)"),
    labels: Optional[str] = typer.Option(None, "--labels", help="with --pilot: the two labels compared, A,B"),
    rates: Optional[str] = typer.Option(None, "--rates", help="assumed success rates of A and B, e.g. 0.80,0.85"),
    correlation: float = typer.Option(0.0, "--correlation",
                                      help="with --rates: correlation of A's and B's outcomes on an episode "
                                           "(0: independent, the most conservative)"),
    discordance: Optional[float] = typer.Option(None, "--discordance",
                                                help="assumed share of episodes where exactly one policy succeeds"),
    episodes: Optional[int] = typer.Option(None, "--episodes", help="planned episodes per cell: the smallest Δ they detect"),
    looks: int = typer.Option(5, "--looks", help="sequential design: looks (rounds) up to the budget"),
    suites: str = typer.Option("libero_spatial,libero_object,libero_goal,libero_10", "--suites",
                               help="without --pilot: the suites to plan for (their average is the paper's)"),
    json_out: bool = typer.Option(False, "--json", help="print the plan as JSON instead of a table"),
) -> None:
    """Episodes per cell needed to detect a gap Δ between two policies paired on (task, init state, seed), per
    suite and for the average over suites; with --episodes, the smallest Δ that budget detects."""
    from lamp_bench.results import planning
    from lamp_bench.results.aggregate import episode_frame
    from lamp_bench.results.store import EpisodeStore

    planning.validate(delta, alpha, power, episodes, looks, delta_from_rates=rates is not None and pilot is None)
    if pilot is not None:
        if labels is None:
            raise ConfigError("--pilot needs --labels A,B: the two labels whose episodes pair up")
        if not pilot.is_dir():
            raise ConfigError(f"pilot results directory {pilot} does not exist")
        label_a, label_b = parse_pair(labels, "--labels")
        if label_a == label_b:
            raise ConfigError(f"--labels names {label_a!r} twice; give two different labels")
        pairs = planning.pilot_pairs(episode_frame(EpisodeStore(pilot).records()), label_a, label_b)
        result = planning.plan_from_pilot(pairs, delta, alpha, power, episodes, looks)
    else:
        if labels is not None:
            raise ConfigError("--labels goes with --pilot RUNS (the results directory the labels are in)")
        rate_pair = parse_pair(rates, "--rates", float) if rates is not None else None
        result = planning.plan_from_assumption([s.strip() for s in suites.split(",") if s.strip()], delta, alpha,
                                               power, episodes, looks, rate_pair, correlation, discordance)
    if json_out:
        print(json.dumps(asdict(result), indent=2))
        return
    out = Console(width=max(120, Console().width))
    out.print(plan_table(result, episodes))
    for row in result.rows:
        if row.note:
            out.print(f"{row.name}: {row.note}", highlight=False)
