"""`lamp-bench sweep` and `lamp-bench status`: run a sweep file's cells as jobs, and follow them."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from lamp_bench.harness.cli import _progress, app, check_machine, console, existing_results_dir, user_errors


@app.command()
@user_errors
def sweep(
    file: Path = typer.Argument(..., help="sweep file (sweeps/*.toml)"),
    out: Path = typer.Option(..., "--out", help="results directory shared by every cell"),
    executor: str = typer.Option("local", "--executor", help="inline | local | slurm"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="local executor: jobs at once"),
    chunk_size: Optional[int] = typer.Option(None, "--chunk-size", min=1, help="episodes per job (policy loaded once)"),
    tables: Optional[str] = typer.Option(None, "--tables", help="run only these tables (comma-separated) and the "
                                                                "demonstration and training steps they need"),
    envs_per_worker: Optional[int] = typer.Option(None, "--envs-per-worker", min=1,
                                                  help="override the sweep file's environments per worker"),
    detach: bool = typer.Option(False, "--detach", help="slurm: return once submitted; follow with `lamp-bench status`"),
    partition: Optional[str] = typer.Option(None, "--partition"),
    gpus_per_node: int = typer.Option(1, "--gpus-per-node", min=0, help="GPUs per job (0 on CPU clusters)"),
    cpus_per_task: Optional[int] = typer.Option(None, "--cpus-per-task", min=1),
    mem: Optional[str] = typer.Option(None, "--mem", help="per job, Slurm's form (64G)"),
    time_limit: str = typer.Option("4:00:00", "--time", help="per job, Slurm's form ([D-]HH:MM:SS or minutes)"),
    qos: Optional[str] = typer.Option(None, "--qos"),
    account: Optional[str] = typer.Option(None, "--account"),
    constraint: Optional[str] = typer.Option(None, "--constraint"),
    array_parallelism: Optional[int] = typer.Option(None, "--array-parallelism", min=1),
    setup: list[str] = typer.Option([], "--setup", help="shell line run before each job (repeatable)"),
    max_retries: int = typer.Option(2, "--max-retries", min=0, help="resubmissions of a job that died"),
    env_retries: int = typer.Option(2, "--env-retries", min=0,
                                    help="retries of an episode whose environment crashed, hung or failed, each in "
                                         "a fresh environment (left as env_error after that; a re-run retries it)"),
) -> None:
    """Run a sweep (policies x suites x settings) as jobs; resumable and preemption-safe."""
    from lamp_bench.harness.executors import SlurmOptions
    from lamp_bench.harness.sweep import load_sweep, only_tables, plan_sweep, run_sweep, sweep_status, write_plan

    loaded = load_sweep(file)
    if tables is not None:
        loaded = only_tables(loaded, [name.strip() for name in tables.split(",") if name.strip()])
    plan = plan_sweep(loaded, out, chunk_size)
    if executor != "slurm":  # Slurm jobs run on other nodes; they check themselves when they start
        check_machine(sorted({job.spec.suite for job in plan.jobs}))
    if envs_per_worker is not None:
        for job in plan.jobs:
            job.spec.envs_per_worker = envs_per_worker
    for job in plan.jobs:
        job.spec.env_retries = env_retries
    slurm = SlurmOptions(partition=partition, gpus_per_node=gpus_per_node, cpus_per_task=cpus_per_task, mem=mem,
                         time=time_limit, qos=qos, account=account, constraint=constraint,
                         array_parallelism=array_parallelism, setup=list(setup), max_retries=max_retries)
    total = sum(len(j.spec.episodes) for j in plan.jobs)
    console.print(f"{plan.name}: {len(plan.cells)} cells, {total} episodes in {len(plan.jobs)} jobs -> {out}")
    with _progress() as progress:
        bar = progress.add_task(plan.name, total=total)
        refresh = lambda: progress.update(bar, completed=sum(c.done + c.failed for c in sweep_status(out)))
        write_plan(plan)  # status reads the plan: a fresh results directory has none yet
        refresh()
        result = run_sweep(plan, executor, workers=workers, slurm=slurm if executor == "slurm" else None,
                           detach=detach, on_progress=refresh)
        refresh()
    if result.detached:
        console.print(f"submitted; follow with `lamp-bench status {out}`")
        return
    _print_status(out)
    if result.failures:
        console.print("[red]jobs that failed for good[/red] (their finished episodes are kept):\n" + "\n".join(result.failures))
        raise typer.Exit(1)


def _print_status(out: Path) -> None:
    from lamp_bench.harness.sweep import sweep_status

    table = Table(title=f"sweep cells in {out}", title_justify="left")
    for column in ("policy", "suite", "done", "running", "failed", "env errors", "pending", "success %"):
        table.add_column(column, justify="left" if column in ("policy", "suite") else "right")
    cells = sweep_status(out)
    for cell in cells:
        rate = f"{100 * cell.successes / cell.done:.1f}" if cell.done else "–"
        table.add_row(cell.label, cell.suite, f"{cell.done}/{cell.total}", str(cell.running), str(cell.failed),
                      str(cell.env_errors), str(cell.pending), rate + ("‡" if cell.env_errors else ""))
    Console(width=max(100, Console().width)).print(table)
    for cell in cells:
        for error in cell.errors[:3]:
            console.print(f"{cell.label}/{cell.suite}: {error}", highlight=False)
    from lamp_bench.harness.sweep.step_status import print_steps

    print_steps(out, console)  # demos and training steps, cells they block, held-out flags


@app.command()
@user_errors
def status(results_dir: Path = typer.Argument(..., help="results directory of a sweep")) -> None:
    """Per cell: episodes done / running / failed / pending, from the store and the job states."""
    existing_results_dir(results_dir)
    _print_status(results_dir)
