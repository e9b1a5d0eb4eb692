"""`lamp-bench trials`: record real-robot trials in a results directory (results/trials.py), correct them
without overwriting, and list them; `lamp-bench report` renders them (reports/real_world.py)."""
from __future__ import annotations

import getpass
import json
import platform
import socket
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.prompt import Prompt
from rich.table import Table

from lamp_bench.harness.cli import app, console, user_errors
from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.provenance import code_commit, package_versions
from lamp_bench.results.trials import (TrialInputError, TrialPlan, TrialRecord, TrialStore, check_name,
                                       check_trial_index, correction_of, current_of, new_trial,
                                       parse_success)

HELP = "\n\n".join([
    "Real-robot trials, recorded in RESULTS/trials/*.jsonl beside the simulated episodes, with the same "
    "provenance (policy, checkpoint hash, server metadata, code commit). A trial is keyed by label, task type "
    "and trial index (counting from 1); `lamp-bench report RESULTS` renders them as the paper's real-world table.",
    "[bold]record[/bold], scripted: one trial per call from flags, e.g. `lamp-bench trials record RESULTS "
    "--label lamp --task-type pick --trial 3 --success yes --notes 'slow grasp' --video clips/pick3.mp4 "
    "--operator ana`.",
    "[bold]record[/bold], interactive: give a plan instead (`--task-types pick,drawer,tool --trials-per-task 10`) "
    "and answer success (y/n, q stops) and notes for each trial on the terminal. Each answer is stored at once; "
    "re-running the same command resumes at the next unrecorded trial of the plan.",
    "[bold]correct[/bold]: a mistyped trial is never edited. `lamp-bench trials correct RESULTS --label lamp "
    "--task-type pick --trial 3 --success no --reason 'grasp slipped'` appends a record that supersedes it; "
    "both are kept and readers take the latest correction.",
    "[bold]show[/bold]: the trials as readers see them (`--history` adds the superseded records).",
])

trials_app = typer.Typer(help=HELP, no_args_is_help=True)
app.add_typer(trials_app, name="trials")

LABEL_OPTION = typer.Option(..., "--label", help="name of the policy in results (e.g. lamp, openvla-real)")


def trial_provenance() -> dict[str, Any]:
    """What episode records carry minus the simulator fields: code commit, host, Python, package versions."""
    return {"code_commit": code_commit(), "host": socket.gethostname(), "python": platform.python_version(),
            "versions": package_versions()}


def read_server_metadata(path: Optional[Path]) -> Optional[dict[str, Any]]:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--server-metadata {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"--server-metadata {path} is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--server-metadata {path} must hold a JSON object (the server's metadata map)")
    return data


def resolve_checkpoint_hash(checkpoint: Optional[Path], checkpoint_hash: Optional[str]) -> Optional[str]:
    """The weights' identity, computed as for simulated episodes (a lamp-bench checkpoint folder), or given
    directly for a policy lamp-bench did not load (e.g. a served OpenVLA)."""
    if checkpoint is not None and checkpoint_hash is not None:
        raise ConfigError("give --checkpoint DIR or --checkpoint-hash HASH, not both")
    if checkpoint_hash is not None:
        return checkpoint_hash
    if checkpoint is None:
        return None
    if not checkpoint.is_dir():
        raise ConfigError(f"checkpoint {checkpoint} is not a directory (expected config.json, model.safetensors, ...)")
    from lamp_bench.models.lamp.checkpoint import checkpoint_hash as hash_checkpoint  # torch: only when asked

    return hash_checkpoint(checkpoint)  # a folder without readable weights is a CheckpointError (a ConfigError)


def checkpoint_identity(given: Optional[str], metadata: Optional[dict[str, Any]]) -> Optional[str]:
    """The checkpoint hash a trial records: the one given, else the one the server announced
    (`lamp-bench serve` puts it in its metadata); the two must agree when both are there."""
    announced = (metadata or {}).get("checkpoint_hash")
    if given is not None and announced is not None and given != announced:
        raise ConfigError(f"--server-metadata says the server ran checkpoint {str(announced)[:16]}, not "
                          f"{given[:16]}; record the trial under the checkpoint that actually ran")
    return given if given is not None else (str(announced) if announced is not None else None)


def check_label_identity(store: TrialStore, label: str, checkpoint_hash: Optional[str]) -> None:
    """One label never mixes two checkpoints (as for episodes)."""
    others = store.checkpoint_hashes(label) - {checkpoint_hash}
    if others:
        shown = ", ".join(str(h)[:16] for h in sorted(others, key=str))
        raise ConfigError(f"label {label!r} in {store.root} already has trials of checkpoint {shown}; give the "
                          "same --checkpoint/--checkpoint-hash, or a new --label")


def parse_plan(task_types: Optional[str], trials_per_task: Optional[int]) -> Optional[TrialPlan]:
    if task_types is None and trials_per_task is None:
        return None
    if task_types is None or trials_per_task is None:
        raise ConfigError("a plan needs both --task-types a,b,c and --trials-per-task N")
    return TrialPlan.parse(task_types, trials_per_task)


def video_for(template: Optional[str], label: str, task_type: str, trial: int) -> Optional[str]:
    if template is None:
        return None
    try:
        return template.format(label=label, task_type=task_type, trial=trial)
    except (KeyError, IndexError, ValueError):
        raise ConfigError(f"--video-template {template!r} may use only {{label}}, {{task_type}} and {{trial}}") from None


def describe(record: TrialRecord) -> str:
    return f"{record.label} {record.task_type} #{record.trial}: {'success' if record.success else 'failure'}"


@trials_app.command("record")
@user_errors
def record(
    results_dir: Path = typer.Argument(..., help="results directory (trials go to RESULTS/trials/)"),
    label: str = LABEL_OPTION,
    policy: Optional[str] = typer.Option(None, "--policy", help="policy name (default: the label)"),
    task_type: Optional[str] = typer.Option(None, "--task-type", help="scripted: the trial's task type"),
    trial: Optional[int] = typer.Option(None, "--trial", help="scripted: the trial index (from 1)"),
    success: Optional[str] = typer.Option(None, "--success", help="scripted: yes or no"),
    notes: Optional[str] = typer.Option(None, "--notes", help="scripted: free text"),
    video: Optional[str] = typer.Option(None, "--video", help="scripted: path of the trial's video"),
    task_types: Optional[str] = typer.Option(None, "--task-types", help="plan: task types, e.g. pick,drawer,tool"),
    trials_per_task: Optional[int] = typer.Option(None, "--trials-per-task", help="plan: trials per task type"),
    video_template: Optional[str] = typer.Option(
        None, "--video-template", help="interactive: video path per trial, e.g. videos/{label}/{task_type}_{trial}.mp4"),
    operator: Optional[str] = typer.Option(None, "--operator", help="who ran the trial (default: the login name)"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="the policy's checkpoint directory"),
    checkpoint_hash: Optional[str] = typer.Option(None, "--checkpoint-hash",
                                                  help="the weights' identity when lamp-bench did not write them"),
    server_metadata: Optional[Path] = typer.Option(None, "--server-metadata",
                                                   help="JSON file of the policy server's metadata"),
) -> None:
    """Record trials: one from flags (--task-type, --trial, --success), or interactively over a plan (--task-types, --trials-per-task), resuming at the next unrecorded trial."""
    check_name(label, "--label")
    policy = check_name(policy or label, "--policy")
    plan = parse_plan(task_types, trials_per_task)
    scripted = {"--task-type": task_type, "--trial": trial, "--success": success}
    if any(v is not None for v in scripted.values()):
        missing = [k for k, v in scripted.items() if v is None]
        if missing:
            raise ConfigError(f"a scripted trial needs --task-type, --trial and --success; missing {', '.join(missing)}"
                              " (or leave all three out and give a plan to record interactively)")
    elif plan is None:
        raise ConfigError("give --task-type T --trial N --success yes|no for one trial, or a plan "
                          "(--task-types a,b,c --trials-per-task N) to record interactively")
    if task_type is not None:  # the trial's own fields first: a typo is reported before anything else
        check_name(task_type, "--task-type")
        check_trial_index(trial)
        if plan is not None:
            plan.check(task_type, trial)
        outcome = parse_success(success)
    else:
        video_for(video_template, label, "t", 1)  # a bad template fails before the first question
    metadata = read_server_metadata(server_metadata)
    ckpt = checkpoint_identity(resolve_checkpoint_hash(checkpoint, checkpoint_hash), metadata)
    store = TrialStore(results_dir)
    check_label_identity(store, label, ckpt)
    fields = dict(checkpoint_hash=ckpt, server_metadata=metadata, plan=plan, provenance=trial_provenance())
    operator = operator or getpass.getuser()
    if task_type is not None:
        existing = store.find(label, task_type, trial)
        if existing is not None:
            raise ConfigError(f"{describe(existing)} is already recorded in {results_dir}; change it with "
                              f"`lamp-bench trials correct {results_dir} --label {label} --task-type {task_type} "
                              f"--trial {trial} --success ... --reason ...`")
        stored = new_trial(label, policy, task_type, trial, outcome, operator, notes=notes, video=video, **fields)
        store.append(stored)
        console.print(f"recorded {describe(stored)}", highlight=False)
        return
    record_interactively(store, plan, label, policy, operator, video_template, fields)


def ask_success(prompt: str) -> Optional[bool]:
    """y/n until valid; None when the operator stops (q)."""
    while True:
        answer = Prompt.ask(f"{prompt} success? [bold]y[/bold]/[bold]n[/bold] (q: stop)", console=console)
        if answer.strip().lower() in ("q", "quit"):
            return None
        try:
            return parse_success(answer)
        except TrialInputError:
            console.print("answer y or n (q stops; the trials so far are kept)")


def record_interactively(store: TrialStore, plan: TrialPlan, label: str, policy: str, operator: str,
                         video_template: Optional[str], fields: dict[str, Any]) -> None:
    order = plan.order()
    done = store.recorded_keys(label)
    todo = [(t, i) for t, i in order if (label, t, i) not in done]
    recorded = len(order) - len(todo)
    if not todo:
        console.print(f"{label}: all {len(order)} planned trials are recorded in {store.root}", highlight=False)
        return
    console.print(f"{label}: {recorded} of {len(order)} planned trials already recorded; starting at "
                  f"{todo[0][0]} #{todo[0][1]}. A mistyped answer: fix it later with `lamp-bench trials correct`.",
                  highlight=False)
    resume = f"{recorded} of {len(order)} recorded; run the same command to resume"
    try:
        for task_type, trial in todo:
            console.rule(f"{label} · {task_type} #{trial} ({recorded + 1}/{len(order)})")
            outcome = ask_success(f"{task_type} #{trial}")
            if outcome is None:
                console.print(f"stopped: {resume}", highlight=False)
                return
            notes = Prompt.ask("notes (Enter: none)", default="", show_default=False, console=console)
            stored = new_trial(label, policy, task_type, trial, outcome, operator, notes=notes.strip(),
                               video=video_for(video_template, label, task_type, trial), **fields)
            store.append(stored)
            recorded += 1
            resume = f"{recorded} of {len(order)} recorded; run the same command to resume"
            console.print(f"recorded {describe(stored)}", highlight=False)
    except (EOFError, KeyboardInterrupt) as stop:
        console.print(f"\ninput ended: {resume}", highlight=False)
        raise typer.Exit(130 if isinstance(stop, KeyboardInterrupt) else 1)
    console.print(f"{label}: all {len(order)} planned trials recorded", highlight=False)


@trials_app.command("correct")
@user_errors
def correct(
    results_dir: Path = typer.Argument(..., help="results directory"),
    label: str = LABEL_OPTION,
    task_type: str = typer.Option(..., "--task-type", help="the trial's task type"),
    trial: int = typer.Option(..., "--trial", help="the trial index (from 1)"),
    reason: str = typer.Option(..., "--reason", help="why the recorded trial is wrong"),
    success: Optional[str] = typer.Option(None, "--success", help="the right outcome: yes or no"),
    notes: Optional[str] = typer.Option(None, "--notes", help="replacement notes"),
    video: Optional[str] = typer.Option(None, "--video", help="replacement video path"),
    operator: Optional[str] = typer.Option(None, "--operator", help="who corrects it (default: the trial's operator)"),
) -> None:
    """Correct a recorded trial: appends a record that supersedes it (the old one is kept)."""
    check_name(label, "--label")
    check_name(task_type, "--task-type")
    check_trial_index(trial)
    outcome = parse_success(success) if success is not None else None
    store = TrialStore(results_dir)
    current = store.find(label, task_type, trial)
    if current is None:
        raise ConfigError(f"{label} {task_type} #{trial} is not recorded in {results_dir}; record it with "
                          "`lamp-bench trials record`")
    fixed = correction_of(current, reason, operator=operator, success=outcome, notes=notes, video=video)
    store.append(fixed)
    console.print(f"corrected {describe(current)} -> {describe(fixed)}", highlight=False)


@trials_app.command("show")
@user_errors
def show(
    results_dir: Path = typer.Argument(..., help="results directory"),
    label: Optional[str] = typer.Option(None, "--label", help="only this label"),
    history: bool = typer.Option(False, "--history", help="also the superseded records"),
) -> None:
    """The recorded trials (the latest correction of each), with totals per label."""
    store = TrialStore(results_dir)
    trials = store.history()
    table = Table(title=f"real-robot trials in {results_dir}", title_justify="left")
    for column in ("label", "policy", "task type", "trial", "success", "operator", "notes", "video", "recorded at",
                   "status"):
        table.add_column(column, justify="right" if column == "trial" else "left")
    totals: dict[str, list[int]] = {}
    for key, records in sorted(trials.items()):
        if label is not None and key[0] != label:
            continue
        current = current_of(records)
        for r in records if history else [current]:
            status = ("correction: " + str(r.correction_reason)) if r.is_correction else "original"
            if r is not current:
                status = "superseded"
            table.add_row(r.label, r.policy, r.task_type, str(r.trial), "yes" if r.success else "no", r.operator,
                          r.notes or "", r.video or "", r.recorded_at[:19], status,
                          style="dim" if r is not current else None)
        counts = totals.setdefault(key[0], [0, 0])
        counts[0] += current.success
        counts[1] += 1
    if not totals:
        console.print(f"no trials recorded in {results_dir}" + (f" for label {label}" if label else ""))
        return
    out = Console(width=max(120, Console().width))
    out.print(table)
    for name, (k, n) in sorted(totals.items()):
        out.print(f"{name}: {k}/{n} trials succeeded ({100 * k / n:.1f}%)", highlight=False)
