"""`lamp-bench lineage RESULTS --label L --suite S`: the chain behind one table cell, from its episodes to
the demonstrations its checkpoint was trained on (results/lineage.py)."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from lamp_bench.harness.cli import app, existing_results_dir, user_errors
from lamp_bench.results.lineage import CheckpointLineage, cell_lineage, compact, describe_states
from lamp_bench.results.store import EpisodeStore

STATUS_TEXT = {
    "untrained": "no checkpoint folder in the records (a policy without trained weights)",
    "missing": "no lineage.json next to the checkpoint (trained outside lamp-bench, or before lineage existed)",
    "stale": "lineage.json describes other weights than these episodes ran (the folder was retrained since)",
}


def chain_lines(c: CheckpointLineage) -> list[str]:
    rate = f"{c.successes}/{c.episodes}"
    lines = [f"episodes: {c.episodes} ({rate} successes) on {describe_states(c.eval_pairs)}",
             f"  -> checkpoint {c.checkpoint_hash or 'none'}" + (f" in {', '.join(c.folders)}" if c.folders else "")]
    if c.status != "ok":
        return lines + [f"  -> lineage: {STATUS_TEXT[c.status]}" + (f" ({c.lineage_file})" if c.lineage_file else "")]
    training = ", ".join(f"{k}={json.dumps(v)}" for k, v in c.training.items() if k != "data")
    lines += [f"  -> lineage {c.lineage_file}",
              f"  -> training: {training}",
              f"     trainer code commit {c.code_commit}",
              *_depth_lines(c.depth_estimator),
              f"  -> demonstrations: set {c.demo_set_hash} ({len(c.demo_pairs)} demos, suites "
              f"{', '.join(c.demo_suites) or '?'}; data {', '.join(map(str, c.training.get('data') or []))})"]
    for suite in c.demo_suites:
        pairs = [(t, s) for sx, t, s in c.demo_pairs if sx == suite]
        lines.append(f"     {suite}: {describe_states(pairs)}")
    if c.collection:
        lines.append(f"     collected with {json.dumps(c.collection, sort_keys=True, default=str)}")
    if c.selection_states is not None:
        lines.append(f"  -> selected at step {c.chosen_step} on init states {compact(sorted(c.selection_states))}")
    if c.on_selection_states:
        lines.append(f"  !! evaluated on init states that selected the checkpoint: {describe_states(c.on_selection_states)}")
    if c.on_demo_states:
        lines.append(f"  !! not held out: evaluated on {len(c.on_demo_states)} (task, init state) pairs the "
                     f"demonstrations used: {describe_states(c.on_demo_states)}")
    elif c.demo_pairs:
        lines.append("  held out: no evaluated init state was used by the demonstrations")
    return lines


def _depth_lines(depth: dict | None) -> list[str]:
    if not depth:  # no motion pathway, or a lineage written before depth was recorded
        return []
    if depth.get("source") == "sim":
        return ["     depth: the simulator's"]
    line = f"     depth: {depth.get('source')} estimator, weights {depth.get('weights')} (hash {depth.get('weights_hash')})"
    return [line] + ([f"     !! the depth weights are {depth['stand_in']}"] if depth.get("stand_in") else [])


@app.command()
@user_errors
def lineage(
    results_dir: Path = typer.Argument(..., help="results directory"),
    label: str = typer.Option(..., "--label", help="the cell's label"),
    suite: str = typer.Option(..., "--suite", help="the cell's suite"),
    as_json: bool = typer.Option(False, "--json", help="print the chain as JSON"),
) -> None:
    """The chain behind one table cell: episodes -> checkpoint -> training config and commit -> demonstrations."""
    existing_results_dir(results_dir)
    cell = cell_lineage(EpisodeStore(results_dir).records(), label, suite)
    if as_json:
        from dataclasses import asdict

        typer.echo(json.dumps(asdict(cell), indent=1, default=str))
        return
    typer.echo(f"{cell.label} on {cell.suite}: {cell.episodes} episodes, {len(cell.checkpoints)} checkpoint(s)")
    for checkpoint in cell.checkpoints:
        typer.echo("\n".join(chain_lines(checkpoint)))
