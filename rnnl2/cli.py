"""The `rnnl2` command line: the only module that prints. Torch is imported inside the
commands that need it, so `rnnl2 --help` and `rnnl2 config show` answer at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml
from rich.console import Console
from rich.table import Table

from .config import RunConfig, load_config, to_plain_dict
from .errors import ConfigError, Rnnl2Error

app = typer.Typer(
    help="Experiments on L2 regularization of recurrent networks: train, evaluate, compare.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect configs: the resolved values, or the JSON Schema.", no_args_is_help=True)
app.add_typer(config_app, name="config")

out = Console(soft_wrap=True)  # results: the run folder, tables, JSON
err = Console(stderr=True, soft_wrap=True)  # progress, logs and errors

ConfigPath = Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="YAML config file.")]
Overrides = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Override a key: --set l2.lambda=1e-4 (value parsed as YAML; repeatable)."),
]


def fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    raise typer.Exit(code=code)


def load_or_exit(config: Path, overrides: list[str] | None) -> RunConfig:
    try:
        return load_config(config, overrides or [])
    except ConfigError as error:
        fail(str(error))


class RichObserver:
    """Progress for `train`: a Rich bar on a terminal, one plain line per epoch otherwise."""

    def __init__(self, quiet: bool, verbose: bool):
        self.quiet, self.verbose = quiet, verbose
        self.live = err.is_terminal and not quiet
        self.progress = None
        self.epochs = 0

    def on_start(self, info: dict[str, Any]) -> None:
        self.epochs = info["epochs"]
        if self.quiet:
            return
        err.print(f"run folder {info['run_dir']}  device {info['device']}  parameters {info['parameters']:,}", highlight=False)
        if info.get("resumed_from"):
            where = info["resumed_from"]
            err.print(f"resuming after epoch {where['epoch']}, step {where['step']}", highlight=False)
        if self.verbose:
            err.print(selection_table(info["l2"]))
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), console=err, transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=1, epoch=0, epochs=self.epochs, loss="…")

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        if self.progress is not None:
            self.progress.reset(self.task, total=steps, epoch=epoch, loss="…")

    def on_step(self, step: int, loss: float | None) -> None:
        if self.progress is not None:
            fields = {"loss": f"{loss:.4f}"} if loss is not None else {}
            self.progress.update(self.task, completed=step, **fields)

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        if self.quiet:
            return
        parts = [f"epoch {row['epoch']}/{self.epochs}", f"step {row['step']}"]
        parts += [f"{key} {row[key]:.4g}" for key in row if key.startswith(("train_data_loss", "penalty", "val_"))]
        parts += [f"{row['seconds']:.1f}s"]
        err.print("  ".join(parts), highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def selection_table(rows: list[tuple[str, tuple[int, ...], float | None]]) -> Table:
    table = Table(title="L2 selection: (λ/2)·Σθ² over the marked parameters")
    for column in ("parameter", "shape", "λ"):
        table.add_column(column)
    for name, shape, lam in rows:
        table.add_row(name, "×".join(map(str, shape)), "—" if lam is None else f"{lam:g}")
    return table


def metrics_table(title: str, metrics: dict[str, Any]) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
    return table


@app.command()
def train(
    config: Annotated[Optional[Path], typer.Argument(exists=True, dir_okay=False, help="YAML config file.")] = None,
    overrides: Overrides = None,
    runs_dir: Annotated[Path, typer.Option(help="Folder that receives runs/<name>/<time>-<id>/.")] = Path("runs"),
    run_dir: Annotated[Optional[Path], typer.Option(help="Write the run into exactly this (new or empty) folder.")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue this run folder from its checkpoints/last.pt, with its own config.yaml.", file_okay=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="With --resume: continue with a CONFIG or --set that differs from the run's.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final summary line.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also list which parameters get which λ.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object on stdout.")] = False,
) -> None:
    """Train one model from a YAML config (or --resume a run); the last line on stdout is the run folder."""
    if config is None and resume is None:
        fail("give a CONFIG file to train, or --resume RUN_DIR to continue a run")
    if resume is not None and run_dir is not None:
        fail("--resume continues its own folder; leave out --run-dir")
    given = config or (resume / "config.yaml" if overrides else None)
    cfg = load_or_exit(given, overrides) if given is not None else None
    from .train import TrainingDiverged, TrainingInterrupted, run

    observer = RichObserver(quiet=quiet or as_json, verbose=verbose)
    try:
        if resume is not None:
            from .resume import resume as resume_run

            result = resume_run(resume, cfg, force, observer)
        else:
            result = run(cfg, runs_dir, run_dir, observer)
    except TrainingDiverged as error:
        observer.close()
        fail(str(error), code=1)
    except TrainingInterrupted as stopped:
        observer.close()
        err.print(f"[yellow]interrupted[/yellow]; continue with: rnnl2 train --resume {stopped}", highlight=False)
        raise typer.Exit(code=130)
    except Rnnl2Error as error:
        observer.close()
        fail(str(error))
    except OSError as error:  # disk full, folder removed: a message, not a traceback
        observer.close()
        fail(f"cannot write the run folder: {error}", code=1)
    except KeyboardInterrupt:  # Ctrl-C before the loop took over signals, or during the final evaluation
        observer.close()
        err.print("[yellow]interrupted[/yellow]", highlight=False)
        raise typer.Exit(code=130)
    observer.close()
    summary = result.summary
    if as_json:
        print(json.dumps(summary))
        return
    tests = "  ".join(f"{k} {v:.4g}" for k, v in summary.items() if k.startswith("test_"))
    err.print(
        f"[green]finished[/green] {summary['status']}: best epoch {summary['best_epoch']} "
        f"({summary['best_metric']} {summary['best_value']:.4g})  {tests}  {summary['wall_seconds']:.1f}s",
        highlight=False,
    )
    print(result.run_dir)


@app.command("eval")
def eval_command(
    path: Annotated[Path, typer.Argument(help="A checkpoint file, or a run folder (its best checkpoint).")],
    split: Annotated[str, typer.Option(help="Split to evaluate: train, val or test.")] = "test",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")] = False,
    data: Annotated[Optional[Path], typer.Option(help="Evaluate on this file instead, read through the saved pipeline.")] = None,
) -> None:
    """Evaluate a trained model on one split (writes eval-<split>.json into the run folder) or on a new file."""
    if split not in ("train", "val", "test"):
        fail(f"--split must be train, val or test, got {split!r}")
    from .evaluate import evaluate_checkpoint
    from .runs import write_json

    try:
        result = evaluate_checkpoint(path, split, device, data=data)
    except Rnnl2Error as error:
        fail(str(error))
    checkpoint = Path(result["checkpoint"])
    if checkpoint.parent.name == "checkpoints" and data is None:
        write_json(checkpoint.parent.parent / f"eval-{split}.json", result)
    if as_json:
        print(json.dumps(result))
    else:
        out.print(metrics_table(f"{checkpoint} on {data or split}", result))


@app.command()
def predict(
    path: Annotated[Path, typer.Argument(help="A checkpoint file, or a run folder (its best checkpoint).")],
    data: Annotated[Path, typer.Option(help="File to predict, read through the saved pipeline.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the CSV here instead of stdout.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
) -> None:
    """Write predictions as CSV: forecasts per window, step and target (file units), label and
    probabilities, or a language model's next token, probability and surprisal at every position."""
    from .predict import predict_file, to_csv_text
    from .runs import write_text

    try:
        text = to_csv_text(predict_file(path, data, device))
    except Rnnl2Error as error:
        fail(str(error))
    if output is None:
        print(text, end="")
    else:
        write_text(output, text)
        err.print(f"wrote {output}", highlight=False)


@app.command()
def sample(
    path: Annotated[Path, typer.Argument(help="A text_lm checkpoint file, or its run folder (best checkpoint).")],
    prompt: Annotated[str, typer.Option(help="Text to continue, read through the training vocabulary.")] = "",
    length: Annotated[int, typer.Option(min=0, help="Tokens (characters or words) to generate.")] = 200,
    temperature: Annotated[float, typer.Option(min=0.0, help="Softmax temperature; 0 always takes the most likely token.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the sampler.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "cpu",
) -> None:
    """Generate text from a language model: prints the prompt and its continuation."""
    from .sample import sample_text

    try:
        text = sample_text(path, prompt, length, temperature, seed, device)
    except Rnnl2Error as error:
        fail(str(error))
    print(text)


@config_app.command("show")
def config_show(
    config: ConfigPath,
    overrides: Overrides = None,
    params: Annotated[bool, typer.Option("--params", help="Build the model and list which parameters get which λ.")] = False,
) -> None:
    """Print the resolved, validated config (defaults filled in, overrides applied) as YAML."""
    cfg = load_or_exit(config, overrides)
    out.print(yaml.safe_dump(to_plain_dict(cfg), sort_keys=False), end="", highlight=False, markup=False)
    if params:
        from .train import build_setup

        try:
            setup = build_setup(cfg)
        except Rnnl2Error as error:
            fail(str(error))
        from .regularization import describe_selection

        out.print(selection_table(describe_selection(setup.model, setup.groups)))


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of the config file, for editors and validators."""
    print(json.dumps(RunConfig.model_json_schema(by_alias=True), indent=2))


# ------------------------------------------------------------------ sweep, compare, report


class SweepPrinter:
    """Sweep events as plain stderr lines: each start, finish and failure as it happens."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.quiet, self.finished = total, quiet, 0

    def __call__(self, kind: str, record: dict[str, Any]) -> None:
        name = record["name"]
        if kind in ("done", "failed", "interrupted", "skip"):
            self.finished += 1
        where = f"[{self.finished}/{self.total}]"
        if kind in ("failed", "interrupted"):
            err.print(f"{where} [red]{kind}[/red] {name}: {record.get('error')}", highlight=False)
        elif self.quiet:
            return
        elif kind == "done":
            m = record.get("metrics") or {}
            value = m.get("best_value")
            shown = f"{m.get('best_metric')} {value:.4g}" if isinstance(value, (int, float)) else ""
            err.print(f"{where} done {name}  {shown}  {m.get('wall_seconds', 0):.1f}s", highlight=False)
        elif kind == "skip":
            err.print(f"{where} already done {name}", highlight=False)
        elif kind == "start":
            err.print(f"{where} {'resume' if record.get('resume') else 'start'} {name}", highlight=False)


def comparison_table(comparison: Any, title: str = "runs") -> Table:
    """The Rich form of a `compare.Comparison`: best row (first after sorting) in bold green."""
    direction = "lower" if comparison.mode == "min" else "higher"
    table = Table(title=f"{title} — sorted by {comparison.sort} ({direction} is better)")
    columns = comparison.shown_columns()
    for column in columns:
        table.add_column(column, justify="right" if column in comparison.numeric or column == "n" else "left")
    for index, row in enumerate(comparison.rows):
        table.add_row(*(comparison.cell(row, c) for c in columns), style="bold green" if index == 0 else None)
    return table


def print_table(table: Table) -> None:
    """To stdout; whole when stdout is a file or a pipe (Rich would cut it to 80 columns)."""
    (out if out.is_terminal else Console(width=250, soft_wrap=True)).print(table)


@app.command()
def sweep(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A run config, or a sweep file (config + grid/runs/seeds).")],
    grid: Annotated[Optional[list[str]], typer.Option("--grid", help="An axis KEY=V1,V2,… or KEY=logspace(-6,-2,5); repeatable, the runs are the product.")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Seeds for every configuration: 0,1,2.")] = None,
    overrides: Overrides = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Runs in parallel (CPU threads are split between them).")] = 1,
    runs_dir: Annotated[Path, typer.Option(help="Runs go to <runs-dir>/<name>/sweep-<hash>/.")] = Path("runs"),
    sweep_dir: Annotated[Optional[Path], typer.Option(help="Use exactly this sweep folder.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print one `rnnl2 train` command per run and nothing else.")] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop all runs at the first failure.")] = False,
    backend: Annotated[str, typer.Option(help="local (subprocesses here) or ray.")] = "local",
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray).")] = None,
    select: Annotated[Optional[str], typer.Option(help="Pick the best configuration by METRIC[:min|max] (mean over seeds); writes best.yaml.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only failures and the result.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")] = False,
) -> None:
    """Run a grid of configurations × seeds; the same command again resumes it. Last stdout line: the sweep folder."""
    if backend not in ("local", "ray"):
        fail(f"--backend must be local or ray, got {backend!r}")
    from .sweep import build_spec, dry_run_lines, plan_sweep

    try:
        spec = build_spec(path, grid or [], seeds, overrides or [])
        folder, runs = plan_sweep(spec, runs_dir, sweep_dir)
    except Rnnl2Error as error:
        fail(str(error))
    if dry_run:
        print("\n".join(dry_run_lines(spec, runs)))
        return
    from .compare import compare_runs
    from .launch import Launch, gpu_ids, run_sweep
    from .sweep import select_best

    metric, _, mode = (select or "").partition(":")
    if mode not in ("", "min", "max"):
        fail(f"--select {select!r}: write METRIC, METRIC:min or METRIC:max")
    launch = Launch(jobs, backend, ray_address, fail_fast, gpu_ids() if backend == "local" else [])
    if not quiet:
        err.print(f"sweep {folder}: {len(runs)} runs, {jobs} at a time ({backend})", highlight=False)
    try:
        result = run_sweep(spec, runs, folder, launch, SweepPrinter(len(runs), quiet or as_json))
        done = any(r["status"] == "done" for r in result.records)
        selection = select_best(folder, metric, mode or None) if metric and done and not result.interrupted else None
        comparison = compare_runs([folder], by_seed=len(spec.seeds) > 1) if done else None
    except Rnnl2Error as error:
        fail(str(error))
    failed = [r["name"] for r in result.failed]
    if as_json:
        print(json.dumps({"sweep_dir": str(folder), "runs": len(runs), "skipped": result.skipped, "failed": failed,
                          "interrupted": result.interrupted, "selection": selection, "table": comparison and comparison.to_json()}))
    else:
        if comparison is not None:
            print_table(comparison_table(comparison, title=str(folder)))
        if selection:
            err.print(f"[green]selected[/green] {selection['overrides']} by {metric} ({selection['mode']}): "
                      f"{selection['mean']:.4g} ± {selection['std']:.2g} over {selection['n']} seed(s); "
                      f"test {selection['test']}; config in {selection['best_yaml']}", highlight=False)
        if failed:
            err.print(f"[red]{len(failed)} of {len(runs)} runs did not finish:[/red] {', '.join(failed)}", highlight=False)
        print(folder)
    if result.interrupted:
        raise typer.Exit(code=130)
    if failed:
        raise typer.Exit(code=1)


@app.command()
def compare(
    paths: Annotated[list[str], typer.Argument(help="Run folders, sweep folders or globs (quote them).")],
    sort: Annotated[Optional[str], typer.Option(help="Column to sort by (default: the early-stopping metric).")] = None,
    by_seed: Annotated[Optional[bool], typer.Option("--by-seed/--no-by-seed", help="Group runs that differ only in seed (default: when only seeds differ).")] = None,
    csv_path: Annotated[Optional[Path], typer.Option("--csv", help="Also write the table as CSV to this file (- for stdout).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as one JSON object on stdout.")] = False,
) -> None:
    """One row per run: the config keys that differ, best and test metrics, gap, weight norm, epochs, time."""
    from .compare import compare_runs

    try:
        comparison = compare_runs(paths, sort=sort, by_seed=by_seed)
    except Rnnl2Error as error:
        fail(str(error))
    if csv_path is not None:
        if str(csv_path) == "-":
            print(comparison.to_csv(), end="")
            return
        csv_path.write_text(comparison.to_csv(), encoding="utf-8")
        err.print(f"wrote {csv_path}", highlight=False)
    if as_json:
        print(json.dumps(comparison.to_json()))
    else:
        print_table(comparison_table(comparison))


@app.command()
def report(
    paths: Annotated[list[str], typer.Argument(help="Run folders, sweep folders or globs (quote them).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the PNGs, report.md and report.html.")] = Path("report"),
    sort: Annotated[Optional[str], typer.Option(help="Column to sort the report's table by.")] = None,
) -> None:
    """Plot learning curves, the λ curve, weight and gradient norms; write report.md. Last stdout line: report.md."""
    from .report import write_report

    try:
        files = write_report(paths, output, sort=sort)
    except Rnnl2Error as error:
        fail(str(error))
    for path in files[:-1]:
        err.print(f"wrote {path}", highlight=False)
    print(files[-2])
