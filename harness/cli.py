"""The `lamp-bench` command line. Command and option names are a contract: scripts depend on them."""
from __future__ import annotations

import functools
import importlib
import sys
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from lamp_bench.harness.config import ConfigError, parse_ids
from lamp_bench.harness.registry import POLICIES, SUITES, UnknownNameError, load_builtin_entries
from lamp_bench.results.errors import ResultsInputError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Benchmark and ablation harness for LaMP-style vision-language-action policies.")
console = Console(stderr=True)
# Bad input: a name, a path, a setting. Every other exception is a bug in lamp-bench (or a library) and
# shows as one, with its traceback: a ValueError from deep inside must never pass for a user's mistake.
USER_ERRORS = (UnknownNameError, ConfigError, ResultsInputError, FileNotFoundError, NotADirectoryError)


def user_errors(command: Callable) -> Callable:
    """Bad input ends the command with a one-line reason and exit code 2, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as error:
            console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        except Exception:
            console.print("[red]internal error[/red] (a bug, not your input; please report it with the traceback "
                          "below)", highlight=False)
            raise

    return wrapper


def policy_kwargs(checkpoint: Optional[Path], preset: Optional[str], policy: Optional[str] = None) -> dict:
    kwargs = {}
    if checkpoint is not None:
        if not checkpoint.is_dir():
            raise ConfigError(f"checkpoint {checkpoint} is not a directory (expected config.json, model.safetensors, ...)")
        if policy is not None:  # a bad folder is refused here, before any progress bar (headers only)
            from lamp_bench.models.lamp.policies import check_checkpoint

            check_checkpoint(policy, checkpoint)
        kwargs["checkpoint"] = str(checkpoint.resolve())
    if preset is not None:
        kwargs["preset"] = preset
    return kwargs


def suite_kwargs(assets: Optional[Path]) -> dict:
    return {"assets": str(assets.resolve())} if assets is not None else {}


@app.command("list")
def list_entries() -> None:
    """Registered policies and suites, with descriptions."""
    load_builtin_entries()
    out = Console()
    for title, registry in (("policies", POLICIES), ("suites", SUITES)):
        table = Table(title=title, title_justify="left")
        table.add_column("name", style="bold")
        table.add_column("description")
        for name, description in registry.describe():
            table.add_row(name, description)
        out.print(table)


@app.command()
@user_errors
def run(
    suite: str = typer.Option(..., "--suite", help="suite name (see `lamp-bench list`)"),
    policy: str = typer.Option(..., "--policy", help="policy name (see `lamp-bench list`)"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="checkpoint directory"),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="task ids, e.g. 0,3 or 0-4 (default: all)"),
    episodes_per_task: Optional[int] = typer.Option(None, "--episodes-per-task", min=1,
                                                    help="episodes per task (default: the suite's protocol)"),
    out: Path = typer.Option(Path("runs"), "--out", help="results directory (episode store)"),
    executor: str = typer.Option("inline", "--executor", help="inline | local"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="local executor: processes at once"),
    seed: int = typer.Option(0, "--seed"),
    label: Optional[str] = typer.Option(None, "--label", help="name of this policy in results (default: policy)"),
    preset: Optional[str] = typer.Option(None, "--preset", help="model preset when no checkpoint is given"),
    assets: Optional[Path] = typer.Option(None, "--assets", help="the suite's asset folder (or its env variable)"),
    envs_per_worker: Optional[int] = typer.Option(
        None, "--envs-per-worker", min=1,
        help="environments stepped in lockstep per worker, one batched policy call "
             "(default: 8 on a GPU node, else one per core of the worker, at most 4)"),
    record_video: int = typer.Option(0, "--record-video", min=0, help="save K episodes per task as video"),
    record_motion: bool = typer.Option(False, "--record-motion",
                                       help="with --record-video: videos also show the motion pathway's depth "
                                            "map and predicted scene flow (LaMP policies)"),
    env_retries: int = typer.Option(2, "--env-retries", min=0,
                                    help="retries of an episode whose environment crashed, hung or failed, each in "
                                         "a fresh environment (left as env_error after that; a re-run retries it)"),
    server: Optional[str] = typer.Option(None, "--server", help="remote policy: the server's ws://HOST:PORT"),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="remote policy: openpi | vla-eval"),
    until: Optional[str] = typer.Option(None, "--until", help="decided: add episodes in rounds until the paired "
                                        "comparison with --against is decided (group-sequential test)"),
    against: Optional[str] = typer.Option(None, "--against", help="--until decided: the baseline label in --out"),
    budget: Optional[int] = typer.Option(None, "--budget", min=1, help="--until decided: at most N paired episodes "
                                         "(default: all of the run's episodes the baseline has)"),
    round_size: Optional[int] = typer.Option(None, "--round-size", min=1,
                                             help="--until decided: episodes per round (default: budget / 5)"),
) -> None:
    """Evaluate a policy on a suite; resumable (finished episodes are skipped)."""
    from lamp_bench.harness.executors import (JobsFailed, JobSpec, default_envs_per_worker, default_workers,
                                              run_inline, run_local, split_into_jobs)
    from lamp_bench.results.store import EpisodeStore

    load_builtin_entries()
    SUITES.check(suite)
    POLICIES.check(policy)
    from lamp_bench.harness import sequential
    sequential.check_request(until, against, out)
    if record_motion and not record_video:
        raise ConfigError("--record-motion draws onto recorded videos: add --record-video K (episodes per task)")
    if executor not in ("inline", "local"):
        raise ConfigError(f"--executor must be inline or local (use `lamp-bench sweep` for slurm); got {executor!r}")
    n_workers = 1 if executor == "inline" else (workers or default_workers())
    envs_per_worker = envs_per_worker or default_envs_per_worker(n_workers)
    check_machine([suite], suite_kwargs(assets))
    suite_obj = SUITES.build(suite, **suite_kwargs(assets))
    episodes = suite_obj.episodes(parse_ids(tasks), episodes_per_task, seed)
    spec = JobSpec(policy=policy, suite=suite, episodes=episodes, results_dir=str(out), label=label or policy,
                   policy_kwargs={**policy_kwargs(checkpoint, preset, policy), **(
                       {"server": server, "protocol": protocol, "suite": suite} if server or protocol else {})},
                   suite_kwargs=suite_kwargs(assets),
                   envs_per_worker=envs_per_worker, record_video=record_video, env_retries=env_retries,
                   record_motion=record_motion)
    store = EpisodeStore(out)
    if until is not None:
        sequential.run_until_decided(spec, sequential.SequentialOptions(against, budget, round_size),
                                     sequential.executor_function(executor, n_workers, out), console.print)
        return
    keys = set(spec.keys())
    already = len(keys & store.done_keys(spec.run_label))
    console.print(f"{spec.run_label} on {suite}: {len(episodes)} episodes, {already} already in {out}")
    failed = []
    with _progress() as progress:
        bar = progress.add_task(f"{spec.run_label} / {suite}", total=len(episodes), completed=already)
        if executor == "inline":
            run_inline([spec], on_record=lambda r: progress.advance(bar))
        else:
            refresh = lambda: progress.update(bar, completed=len(keys & store.done_keys(spec.run_label)))
            try:
                run_local(split_into_jobs(spec, n_workers), n_workers, Path(out) / "jobs" / "local",
                          on_progress=refresh)
            except JobsFailed as error:  # the episodes they finished are in the store: summarise, then say why
                failed = error.failures
            refresh()
    _print_summary(out, labels=[spec.run_label], suites=[suite])
    if failed:
        console.print("[red]worker jobs that failed[/red] (their finished episodes are kept):\n"
                      + "\n".join(map(str, failed)), highlight=False)
        raise typer.Exit(1)


def check_machine(suites: list[str], kwargs: Optional[dict] = None) -> None:
    """The doctor's cheap checks and the suites' canaries, before anything starts or is submitted: a
    missing part refuses (ConfigError); a drifted stack is said loudly, and recorded with every episode."""
    from lamp_bench.harness.doctor import preflight

    for family, verdict in preflight(suites, kwargs).items():
        if verdict["status"] == "fail":
            console.print(f"[yellow]warning:[/yellow] canary {family}: {verdict['detail']} (see `lamp-bench doctor`)",
                          highlight=False)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=False)


def _print_summary(results_dir: Path, labels: Optional[list[str]] = None, suites: Optional[list[str]] = None) -> None:
    from lamp_bench.results.aggregate import summary
    from lamp_bench.results.store import EpisodeStore

    records = [r for r in EpisodeStore(results_dir).records()
               if (labels is None or r["label"] in labels) and (suites is None or r["suite"] in suites)]
    if not records:
        console.print(f"no episodes recorded in {results_dir}")
        return
    frame = summary(records)
    table = Table(title=f"success in {results_dir}", title_justify="left",
                  caption="† fewer than 10 episodes: read the interval, not the rate; errors = policy errors (counted "
                          "as failures); ‡ incomplete: env errors (the simulator's, in no rate) are unresolved: "
                          "re-run the same command to retry them", caption_justify="left")
    for column, justify in (("policy", "left"), ("suite", "left"), ("task", "left"), ("n", "right"),
                            ("success %", "right"), ("95% interval", "right"), ("errors", "right"),
                            ("env errors", "right")):
        table.add_column(column, justify=justify, overflow="ellipsis", no_wrap=column == "task")
    for row in frame.to_dict("records"):
        task = "all" if row["task_id"] == "all" else f"{row['task_id']}: {str(row['task_name'])[:40]}"
        note = ("†" if row.get("flag") else "") + ("‡" if row["incomplete"] else "")
        scored = row["episodes"] > 0
        table.add_row(str(row["label"]), str(row["suite"]), task, str(row["episodes"]),
                      f"{row['success_%']:.1f}{note}" if scored else f"–{note}",
                      f"{row['ci95_low_%']:.1f}-{row['ci95_high_%']:.1f}" if scored else "–", str(row["errors"]),
                      str(row["env_errors"]), style="bold" if row["task_id"] == "all" else None)
    Console(width=max(120, Console().width)).print(table)


def existing_results_dir(results_dir: Path) -> Path:
    """A results directory a command reads: it must exist (one line, exit 2, when it does not)."""
    if not results_dir.is_dir():
        raise ConfigError(f"results directory {results_dir} does not exist")
    return results_dir


@app.command()
@user_errors
def results(results_dir: Path = typer.Argument(..., help="results directory")) -> None:
    """Per-task and per-suite success with episode counts."""
    _print_summary(existing_results_dir(results_dir))


@app.command()
@user_errors
def demos(
    suite: str = typer.Option(..., "--suite", help="LIBERO suite to roll the oracle out in"),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="task ids, e.g. 0,3 or 0-4 (default: all)"),
    episodes_per_task: int = typer.Option(..., "--episodes-per-task", min=1, help="successful demos per task"),
    out: Path = typer.Option(..., "--out", help="folder of HDF5 files (LIBERO's demo layout)"),
    assets: Optional[Path] = typer.Option(None, "--assets", help="the suite's asset folder (or its env variable)"),
    seed: int = typer.Option(0, "--seed"),
    image_size: int = typer.Option(128, "--image-size", min=16, help="stored image side"),
    init_states: Optional[str] = typer.Option(None, "--init-states",
                                              help="initial states to try, e.g. 10-49 (keep 0-9 for evaluation)"),
    noise: float = typer.Option(0.0, "--noise", min=0.0, help="DART action noise (std) while collecting"),
) -> None:
    """Record successful oracle demonstrations (images, depth, segmentation, camera, object poses); resumable."""
    from lamp_bench.harness.demos import collect_demos

    SUITES.check(suite)
    summary = collect_demos(suite, parse_ids(tasks), episodes_per_task, out,
                            assets=str(assets.resolve()) if assets else None, seed=seed, image_size=image_size,
                            action_noise=noise, init_states=parse_ids(init_states, "--init-states"))
    console.print(summary, highlight=False)


@app.command()
@user_errors
def train(
    config: Optional[Path] = typer.Option(None, "--config", help="training config (TOML or JSON)"),
    preset: Optional[str] = typer.Option(None, "--preset", help="model preset (tiny, small, openvla-7b)"),
    data: Optional[list[Path]] = typer.Option(None, "--data", help="demo folder or HDF5 file (repeatable)"),
    stage: Optional[str] = typer.Option(None, "--stage", help="1 | 2 | both"),
    out: Optional[Path] = typer.Option(None, "--out", help="checkpoint directory to write"),
    policy: Optional[str] = typer.Option(None, "--policy", help="variant to train (lamp, openvla, no-motion, ...)"),
) -> None:
    """Train a policy (stage 1: motion expert; stage 2: joint LoRA fine-tuning); resumes after a kill."""
    from lamp_bench.models.training.config import build_train_config
    from lamp_bench.models.training.loop import train as run_training

    if config is None and (preset is None or not data):
        raise ConfigError("give --config FILE, or --preset P with --data DIR")
    if policy is not None:
        POLICIES.check(policy)
    cfg = build_train_config(config, preset=preset, data=[str(d) for d in data] if data else None,
                             stage=stage, out=out, policy=policy)
    path = run_training(cfg)
    console.print(f"checkpoint written to {path}; evaluate with "
                  f"`lamp-bench run --policy {cfg.policy} --checkpoint {path} --suite ...`", highlight=False)


@app.command()
@user_errors
def report(
    results_dir: Path = typer.Argument(..., help="results directory"),
    out: Optional[Path] = typer.Option(None, "--out", help="report folder (default: RESULTS_DIR/report)"),
    formats: str = typer.Option("md,html", "--format", help="comma-separated: md, tex, csv, html"),
    baseline: Optional[str] = typer.Option(None, "--baseline",
                                           help="label the paired tests compare against (default: openvla, else no-motion)"),
    no_paper: bool = typer.Option(False, "--no-paper", help="leave out the paper's published reference rows"),
) -> None:
    """The paper's tables (with 95% intervals and paired tests), figures and an HTML page from a results directory."""
    from lamp_bench.reports import build_report

    written = build_report(results_dir, out, formats=formats, show_paper=not no_paper, baseline=baseline)
    for path in written:
        print(path)


@app.command()
@user_errors
def profile(
    policy: str = typer.Option("lamp", "--policy", help="policy to time (its no-motion ablation is timed alongside)"),
    preset: str = typer.Option("small", "--preset", help="model preset when no checkpoint is given"),
    batch: int = typer.Option(1, "--batch", min=1, help="observations per policy call"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint",
                                              help="checkpoint directory (lamp-bench's, or an OpenVLA HF folder)"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="statistics key to un-normalise actions with "
                                          "(default: none; actions stay normalised, which costs the same)"),
    repeats: int = typer.Option(10, "--repeats", min=1, help="timed steps (the median is reported)"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch CPU threads (1 is steadiest)"),
    out: Optional[Path] = typer.Option(None, "--out", help="results directory: saves profile/<policy>-<preset>-b<batch>.json "
                                                         "for `lamp-bench report`"),
) -> None:
    """Per-component latency of one policy step (vision, depth, lift, flow network, cross-attention,
    prefill, decode), median of repeated runs, and the ratio to no-motion measured in the same run."""
    import json

    from lamp_bench.models.lamp.profiling import profile_policy

    load_builtin_entries()
    POLICIES.check(policy)
    ckpt = policy_kwargs(checkpoint, None, policy).get("checkpoint")
    result = profile_policy(policy, preset=preset, batch=batch, repeats=repeats, checkpoint=ckpt,
                            device=device, threads=threads, dataset=dataset)
    table = Table(title=f"{policy} ({preset}, batch {batch}, {result['clock']} clock)", title_justify="left")
    table.add_column("component")
    table.add_column("ms", justify="right")
    for name, ms in result["components_ms"].items():
        table.add_row(name, f"{ms:.1f}")
    table.add_row("total", f"{result['total_ms']:.1f}", style="bold")
    if result.get("ratio_to_no_motion") is not None:
        table.add_row("ratio to no-motion", f"{result['ratio_to_no_motion']:.3f}")
    Console().print(table)
    if out is not None:
        path = out / "profile" / f"{policy}-{preset}-b{batch}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"saved {path}")


# Commands kept in modules of their own (harness/cli_*.py) register on `app` when imported.
COMMAND_MODULES: tuple[str, ...] = ("lamp_bench.harness.cli_doctor", "lamp_bench.harness.cli_trials",
                                    "lamp_bench.harness.cli_convert", "lamp_bench.harness.cli_remote",
                                    "lamp_bench.harness.cli_stats", "lamp_bench.harness.cli_lineage",
                                    "lamp_bench.harness.cli_sweep")
for _module in COMMAND_MODULES:
    importlib.import_module(_module)


def main() -> None:  # pragma: no cover
    app(prog_name="lamp-bench")


if __name__ == "__main__":  # pragma: no cover
    # `python -m lamp_bench.harness.cli`: run the app of the imported module, the one the command
    # modules registered on (this file, run as __main__, is a second copy of it).
    from lamp_bench.harness import cli as _cli

    sys.exit(_cli.main())
