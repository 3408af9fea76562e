"""The commands that launch many runs: `sweep` (a grid × seeds) and `tune` (sampled trials,
halved at rungs). Both are thin: plan, launch, print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..config.base import MAX_SEED
from ..errors import INTERRUPTED, RUN_FAILED, ConfigError
from .app import app
from .console import err
from .options import (
    Backend,
    BackendOption,
    Quiet,
    RayAddress,
    ConfigPath,
    Isolate,
    Overrides,
    RunsPerGpu,
    Sampler,
    Scheduler,
    SchedulerChoice,
    SlurmOptions,
    Threads,
    build_launch,
)
from .printers import SweepPrinter, TunePrinter
from .render import print_comparison, print_table, settings_text, tune_table


@app.command()
def sweep(
    path: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help="A run config, or a sweep file (config + grid/runs/seeds)."),
    ],
    grid: Annotated[
        Optional[list[str]],
        typer.Option(
            "--grid", help="An axis KEY=V1,V2,… or KEY=logspace(-6,-2,5); repeatable, the runs are the product."
        ),
    ] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Seeds for every configuration: 0,1,2.")] = None,
    overrides: Overrides = None,
    jobs: Annotated[
        Optional[int],
        typer.Option("--jobs", "-j", min=1, help="Runs in parallel (CPU threads are split between them); default 1."),
    ] = None,
    runs_per_gpu: RunsPerGpu = None,
    threads: Threads = None,
    runs_dir: Annotated[Path, typer.Option(help="Runs go to <runs-dir>/<name>/sweep-<hash>/.")] = Path("runs"),
    sweep_dir: Annotated[Optional[Path], typer.Option(help="Use exactly this sweep folder.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print one `rnnl2 train` command per run and nothing else.")
    ] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop all runs at the first failure.")] = False,
    backend: BackendOption = Backend.local,
    isolate: Isolate = False,
    ray_address: RayAddress = None,
    slurm: SlurmOptions = None,
    select: Annotated[
        Optional[str],
        typer.Option(help="Pick the best configuration by METRIC[:min|max] (mean over seeds); writes best.yaml."),
    ] = None,
    fused: Annotated[
        bool,
        typer.Option(
            "--fused",
            help="Train the runs, which may differ only in l2.lambda, as one block-diagonal model in this "
            "process (same batches for all; each still gets its own run folder). For GPUs: slower than "
            "separate runs on a CPU.",
        ),
    ] = False,
    quiet: Quiet = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")] = False,
) -> None:
    """Run a grid of configurations × seeds; the same command again resumes it. Last stdout line: the sweep folder."""
    from ..search.sweep import build_spec, dry_run_lines, parse_select, plan_sweep

    spec = build_spec(path, grid or [], seeds, overrides or [])
    folder, runs = plan_sweep(spec, runs_dir, sweep_dir)
    if dry_run:
        if fused:  # a fused group is no command line: say what the lines are
            err.print("note: --dry-run lists the runs one `rnnl2 train` each; run without it to train them fused")
        print("\n".join(dry_run_lines(spec, runs)))
        return
    metric, mode = parse_select(select)
    from ..search.sweep_run import run_sweep
    from ..search.sweep import sweep_outcome

    launch = build_launch(backend, jobs, runs_per_gpu, threads, isolate, ray_address, slurm, fail_fast=fail_fast)
    at_once = "as SLURM schedules them" if backend is Backend.slurm else f"{launch.jobs} at a time"
    if fused:
        check_fused(spec, runs, backend, isolate)
        launch.fused, at_once = True, "fused into one model"
    if not quiet:
        err.print(f"sweep {folder}: {len(runs)} runs, {at_once} ({backend.value})", highlight=False)
    with SweepPrinter(runs, quiet or as_json) as printer:
        result = run_sweep(spec, runs, folder, launch, printer)
    outcome = sweep_outcome(folder, spec, result, metric, mode)
    if as_json:
        print(json.dumps(outcome.to_json()))
    else:
        if outcome.comparison is not None:
            print_comparison(outcome.comparison, str(folder))
        if outcome.selection:
            sel = outcome.selection
            err.print(
                f"[green]selected[/green] {settings_text(sel['overrides'])} by {sel['metric']} ({sel['mode']}): "
                f"{sel['mean']:.4g} ± {sel['std']:.2g} over {sel['n']} seed(s); "
                f"test {sel['test']}; config in {sel['best_yaml']}",
                highlight=False,
            )
        if outcome.failed:
            err.print(
                f"[red]{len(outcome.failed)} of {len(runs)} runs did not finish:[/red] {', '.join(outcome.failed)}",
                highlight=False,
            )
        print(folder)
    if result.interrupted:
        raise typer.Exit(code=INTERRUPTED)
    if outcome.failed:
        raise typer.Exit(code=RUN_FAILED)


def check_fused(spec: Any, runs: list, backend: Backend, isolate: bool) -> None:
    """`--fused` refused before anything runs: another backend, --isolate, or runs that cannot fuse."""
    if backend is not Backend.local or isolate:
        raise ConfigError("--fused trains the runs in this process: use it with the local backend, without --isolate")
    from ..config import load_config
    from ..fused import fuse_refusal

    refusal = fuse_refusal([load_config(spec.config, list(run.overrides)) for run in runs])
    if refusal:
        raise ConfigError(f"--fused: {refusal}")


@app.command()
def tune(
    config: ConfigPath,
    space: Annotated[
        list[str],
        typer.Option(
            "--space",
            help="KEY=loguniform(a,b) | uniform(a,b) | int(a,b) | choice(x,y,…), explicit values first: "
            "l2.lambda=0|loguniform(1e-7,1e-1); repeatable.",
        ),
    ],
    sampler: Annotated[
        Sampler, typer.Option(help="random (seeded), grid, or tpe (Optuna: pip install 'rnnl2\\[tune]').")
    ] = Sampler.random,
    scheduler: Annotated[
        SchedulerChoice,
        typer.Option(
            help="halving: every bracket starts at the first rung; hyperband: bracket j starts at rung j, "
            "so one bracket trains every trial to the end; pbt: population-based training, the worst quarter "
            "copies a best member's weights every --perturb-epochs and perturbs its values (×0.8/×1.25); "
            "late: the config as given (λ = 0) trains until early stopping ends it, and each trial is a fork "
            "of it at its best epoch, trained --fork-epochs more with its own values."
        ),
    ] = None,
    perturb_epochs: Annotated[
        Optional[int],
        typer.Option(min=1, help="--scheduler pbt: epochs between two copies (default: max-epochs ÷ 5, at least 1)."),
    ] = None,
    fork_epochs: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="--scheduler late: epochs each fork trains past the trunk's best epoch (default: max-epochs ÷ 5).",
        ),
    ] = None,
    trunk_patience: Annotated[
        Optional[int],
        typer.Option(
            min=1, help="--scheduler late: the trunk's early-stopping patience, which its forks keep (default 2)."
        ),
    ] = None,
    refit: Annotated[
        Optional[bool],
        typer.Option(
            "--refit/--no-refit",
            help="--scheduler late: also train the best fork's values from scratch, as one more trial (default: on).",
        ),
    ] = None,
    trials: Annotated[
        Optional[int], typer.Option(min=1, help="Trials in all (grid: every grid point, the default).")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Seed of the random and tpe samplers.")] = 0,
    eta: Annotated[int, typer.Option(min=2, help="Each rung keeps the best 1/eta of its trials (at least one).")] = 3,
    min_epochs: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="The first rung (default: one epoch past the first multistep/step learning-rate decay, "
            "else max-epochs ÷ eta², at least 1). Equal to --max-epochs: no halving.",
        ),
    ] = None,
    first_rung_from: Annotated[
        Optional[Path],
        typer.Option(
            help="A finished λ = 0 run of the same task: the first rung goes one epoch past its best epoch, "
            "where L2 starts to matter (instead of --min-epochs).",
        ),
    ] = None,
    max_epochs: Annotated[
        Optional[int],
        typer.Option(
            min=1, help="Every trial's train.epochs, the schedule's length and the last rung (default: the config's)."
        ),
    ] = None,
    grid_points: Annotated[
        int, typer.Option(min=2, max=10_000, help="--sampler grid: points of each continuous or long int range.")
    ] = 5,
    storage: Annotated[
        Optional[str],
        typer.Option(
            help="--sampler tpe: an Optuna storage URL several machines share (postgresql://…); "
            "default: study.journal in the tune folder."
        ),
    ] = None,
    overrides: Overrides = None,
    jobs: Annotated[
        Optional[int],
        typer.Option(
            "--jobs", "-j", min=1, help="Trials trained in parallel (CPU threads are split between them); default 1."
        ),
    ] = None,
    runs_per_gpu: RunsPerGpu = None,
    threads: Threads = None,
    runs_dir: Annotated[Path, typer.Option(help="Trials go to <runs-dir>/<name>/tune-<hash>/.")] = Path("runs"),
    tune_dir: Annotated[Optional[Path], typer.Option(help="Use exactly this tune folder.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the rung plan and the first bracket's commands; run nothing.")
    ] = False,
    backend: BackendOption = Backend.local,
    isolate: Isolate = False,
    ray_address: RayAddress = None,
    slurm: SlurmOptions = None,
    quiet: Quiet = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")] = False,
) -> None:
    """Search hyperparameters with successive halving (synchronous, per bracket): trials pause at
    rung epochs and the best 1/eta resume exactly. The same command continues it. Last stdout line: the tune folder."""
    from ..search.tune_lines import epoch_budget, plan_lines
    from ..search.tune_plan import TuneSpec, plan_tune

    spec = TuneSpec(
        config,
        space,
        fixed=overrides or [],
        sampler=sampler.value,
        trials=trials,
        seed=seed,
        eta=eta,
        min_epochs=min_epochs,
        first_rung_from=first_rung_from,
        max_epochs=max_epochs,
        grid_points=grid_points,
        storage=storage,
        scheduler=(scheduler or Scheduler.halving).value,
        perturb_epochs=perturb_epochs,
        fork_epochs=fork_epochs,
        trunk_patience=trunk_patience,
        refit=refit,
    )
    plan = plan_tune(spec, runs_dir, tune_dir)
    launch = build_launch(backend, jobs, runs_per_gpu, threads, isolate, ray_address, slurm)
    jobs = launch.jobs
    if dry_run:
        print("\n".join(plan_lines(plan, jobs)))
        return
    from ..search.tune import run_tune

    if not quiet and not as_json:
        err.print("\n".join(line.removeprefix("# ") for line in plan_lines(plan, jobs) if line.startswith("# ")))
    with TunePrinter(quiet or as_json, plan.trials, epoch_budget(plan, jobs), plan.tune_dir) as printer:
        result = run_tune(plan, launch, printer)
    if as_json:
        print(json.dumps(result.to_json()))
    else:
        print_table(tune_table(result))
        sel = result.selection
        if sel:
            err.print(
                f"[green]selected[/green] trial {sel['trial']} {settings_text(sel['overrides'])} by {sel['metric']} "
                f"({sel['mode']}): "
                f"{sel['mean']:.4g}; test {sel['test']}; config in {sel['best_yaml']}",
                highlight=False,
            )
            past = sel.get("lineage_to_best_epoch") or []
            if len(past) > 1:  # a pbt copy or a late fork: the chosen weights trained with a schedule
                steps = " → ".join(f"{settings_text(step['params'])} from epoch {step['epoch']}" for step in past)
                err.print(
                    f"  its weights trained with {steps} (selection.json: lineage_to_best_epoch)", highlight=False
                )
            if result.plan.late and sel["trial"] == 0:  # the trunk: no fork (nor the refit) beat the config's λ
                tried = "no fork or refit" if len(result.trials) > result.plan.trials else "no fork"
                err.print(
                    f"  {tried} beat the trunk: L2 added at its best epoch did not help. Whether another λ "
                    "from the first epoch would, only a grid from scratch can tell (`rnnl2 sweep CONFIG --grid ...`; "
                    'docs/search.md, "Late λ")',
                    highlight=False,
                )
        share = result.epochs_used / max(result.grid_epochs, 1)
        err.print(
            f"{result.epochs_used} epochs trained, {share:.0%} of {result.grid_epochs} for every trial to the end; "
            f"{result.wall_seconds:.1f}s",
            highlight=False,
        )
        if result.failed:
            err.print(f"[red]{len(result.failed)} trials failed:[/red] {', '.join(result.failed)}", highlight=False)
        if result.killed:
            err.print(
                f"[red]{len(result.killed)} trials were killed twice:[/red] {', '.join(result.killed)}; "
                "run the same command again to resume them",
                highlight=False,
            )
        print(result.tune_dir)
    if result.killed:
        raise typer.Exit(code=RUN_FAILED)
    if result.interrupted:
        raise typer.Exit(code=INTERRUPTED)
    if result.failed:
        raise typer.Exit(code=RUN_FAILED)
