"""`lamp-bench doctor`: a table of checks (ok / warn / fail, detail, fix); exit 1 on any fail."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from lamp_bench.harness.cli import app, console, user_errors

STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


@app.command()
@user_errors
def doctor(
    slurm: bool = typer.Option(False, "--slurm", help="also check that a Slurm controller answers (sinfo)"),
    canaries: bool = typer.Option(True, "--canaries/--no-canaries",
                                  help="run each simulator stack's canary (tens of seconds, cached per stack with --cached)"),
    cached: bool = typer.Option(False, "--cached", help="reuse canary verdicts cached for this exact stack"),
    setup: bool = typer.Option(False, "--setup", help="only what .ci/setup installs (torch must be the CPU wheel)"),
    json_out: Optional[str] = typer.Option(None, "--json", help="also write the checks as JSON to FILE ('-': stdout)"),
    write_canary_reference: bool = typer.Option(False, "--write-canary-reference",
                                                help="measure the canaries now and store them as the repo's reference"),
) -> None:
    """Whether this machine can produce trustworthy numbers, and what to do where it cannot."""
    from lamp_bench.harness import canaries as canary_module
    from lamp_bench.harness.doctor import diagnose

    if write_canary_reference:
        path = canary_module.write_reference(list(canary_module.PROBE_SUITE))
        console.print(f"canary reference written to {path}")
    report = diagnose(slurm=slurm, run_canaries=canaries and not setup, setup_only=setup, use_cache=cached)
    if json_out == "-":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print(report)
        if json_out:
            Path(json_out).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if report.failed:
        console.print(f"[red]{len(report.failed)} check(s) failed[/red]: " + ", ".join(c.name for c in report.failed))
        raise typer.Exit(1)


def _print(report) -> None:
    table = Table(title="lamp-bench doctor", title_justify="left", show_lines=False)
    for column in ("section", "check", "status", "detail", "fix"):
        table.add_column(column, overflow="fold")
    for section, checks in report.sections.items():
        for check in checks:
            table.add_row(section, check.name, f"[{STYLE[check.status]}]{check.status}[/]", check.detail, check.fix)
    Console(width=max(140, Console().width), file=sys.stdout).print(table)
