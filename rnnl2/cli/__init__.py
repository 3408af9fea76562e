"""The `rnnl2` command line: the only module that prints. Torch is imported inside the
commands that need it, so `rnnl2 --help` and `rnnl2 config show` answer at once."""

from __future__ import annotations

import enum
import errno
import json
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from ..config import RunConfig, load_config, to_plain_dict
from ..config.base import MAX_SEED
from .console import err, out
from .printers import SweepPrinter, TunePrinter
from ..errors import BAD_INPUT, INTERNAL_ERROR, INTERRUPTED, RUN_FAILED, ConfigError, Rnnl2Error, Rnnl2Warning


DEBUG_ENV = "RNNL2_DEBUG"
RUNTIME_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.ENOMEM}  # the machine failed, not the input


def usage_exceptions() -> tuple[type[BaseException], ...]:
    """What the command-line parser raises and handles itself (usage errors, exits): Typer's own
    classes, and click's where this Typer is built on click."""
    classes: list[type[BaseException]] = [typer.Exit, typer.Abort]
    if hasattr(typer, "TyperException"):
        classes.append(typer.TyperException)
    if "click" in sys.modules:
        click = sys.modules["click"]
        classes += [click.ClickException, click.exceptions.Exit, click.exceptions.Abort]
    return tuple(classes)


class ErrorBoundary(TyperGroup):
    """The one place where errors become messages and exit codes (README, "Exit codes"):

    - an `Rnnl2Error` prints `error: <message>` and exits with the code its class carries
      (2 bad input, 1 a run that failed, 130 interrupted);
    - Ctrl-C or SIGTERM anywhere (start-up included) exits 130;
    - an `OSError` prints its path and reason: exit 1 for a full disk or I/O error, else 2;
    - anything else is a bug: one line, the traceback in a crash log (or in full with
      `rnnl2 -v ...` or RNNL2_DEBUG=1), exit 3.
    Warnings from the library (damaged lines skipped, ...) print as `warning: <message>`."""

    def invoke(self, ctx: typer.Context) -> Any:
        previous = install_sigterm()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", Rnnl2Warning)
                warnings.showwarning = show_warning
                return super().invoke(ctx)
        except usage_exceptions():
            raise
        except Rnnl2Error as error:
            if not other_rank():  # under torchrun rank 0 speaks for all: one message, not one per rank
                err.print(f"[red]{error.label}:[/red] {escape(str(error))}", highlight=False)
            raise typer.Exit(code=error.exit_code) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/yellow]", highlight=False)
            raise typer.Exit(code=INTERRUPTED) from None
        except OSError as error:
            where = error.filename if error.filename is not None else "a file"
            reason = error.strerror or str(error) or type(error).__name__
            err.print(f"[red]error:[/red] {escape(str(where))}: {escape(reason)}", highlight=False)
            raise typer.Exit(code=RUN_FAILED if error.errno in RUNTIME_ERRNOS else BAD_INPUT) from None
        except Exception as error:  # a bug: keep the traceback, show one line
            raise typer.Exit(code=report_crash(error, debug=debug_requested(ctx))) from None
        finally:
            restore_sigterm(previous)


def other_rank() -> bool:
    """A torchrun rank other than 0 (read from the environment: no torch import here)."""
    return os.environ.get("RANK", "0") not in ("", "0")


def install_sigterm() -> Any:
    """SIGTERM behaves like Ctrl-C from the first line of a command (the training loop turns
    both into "save and stop"); only the main thread can install handlers."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, raise_keyboard_interrupt)


def restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(str(message))}", highlight=False)


def debug_requested(ctx: typer.Context) -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0") or bool((ctx.obj or {}).get("verbose"))


def crash_log_path() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "rnnl2" / "crash.log"


def report_crash(error: Exception, debug: bool) -> int:
    """One line for an unexpected error; the traceback goes to the crash log (or to stderr)."""
    text = "".join(traceback.format_exception(error))
    if debug:
        sys.stderr.write(text)
        err.print(
            f"[red]internal error:[/red] {escape(type(error).__name__)} (a bug in rnnl2; traceback above)",
            highlight=False,
        )
        return INTERNAL_ERROR
    where = crash_log_path()
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        with where.open("a", encoding="utf-8") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} rnnl2 {' '.join(sys.argv[1:])}\n{text}")
        saved = f"the traceback is in {where}"
    except OSError:
        saved = f"set {DEBUG_ENV}=1 to see the traceback"
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    err.print(
        f"[red]internal error:[/red] {escape(type(error).__name__)}: {escape(first)} — a bug in rnnl2; {saved} "
        f"(or rerun with rnnl2 -v …)",
        highlight=False,
    )
    return INTERNAL_ERROR


app = typer.Typer(
    cls=ErrorBoundary,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect configs: the resolved values, or the JSON Schema.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@app.callback()
def root(
    ctx: typer.Context,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help=f"Show the full traceback of an internal error (also {DEBUG_ENV}=1)."),
    ] = False,
) -> None:
    """Experiments on L2 regularization of recurrent networks: train, evaluate, compare.

    Exit codes: 0 success, 1 a run failed (diverged, a sweep run failed, disk full), 2 bad
    input (config, data, checkpoint, paths), 3 an internal error (a bug), 130 interrupted."""
    ctx.obj = {"verbose": verbose}


def main() -> None:
    """The `rnnl2` console script."""
    app(prog_name="rnnl2")


class Split(str, enum.Enum):
    train = "train"
    val = "val"
    test = "test"


class Backend(str, enum.Enum):
    local = "local"
    ray = "ray"
    slurm = "slurm"


ConfigPath = Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="YAML config file.")]
Threads = Annotated[
    Optional[int],
    typer.Option(
        "--threads", min=1, help="CPU threads per run (default: $OMP_NUM_THREADS, else torch's / cores ÷ jobs)."
    ),
]
RunsPerGpu = Annotated[
    Optional[int],
    typer.Option(
        "--runs-per-gpu",
        min=1,
        help="K runs share each GPU: local backend, K per visible GPU (default --jobs: K × GPUs); Ray: num_gpus=1/K.",
    ),
]
Columns = Annotated[
    Optional[str],
    typer.Option(
        help="Numeric columns to show, comma-separated: any number in summary.json (test_mae, "
        "baselines.repeat_last.test_mse), vs_baseline, gap, wall_s, ... (default: the metrics)."
    ),
]
Isolate = Annotated[
    bool,
    typer.Option(
        "--isolate",
        help="Local backend: a fresh process for every run, instead of --jobs warm workers that run many each.",
    ),
]
SlurmOptions = Annotated[
    Optional[list[str]],
    typer.Option(
        "--slurm",
        help="--backend slurm: a submitit job parameter KEY=VALUE (repeatable), e.g. partition=gpu, "
        "timeout_min=120, gpus_per_node=1, cpus_per_task=4; non-generic keys go to SLURM (slurm_KEY).",
    ),
]
Overrides = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Override a key: --set l2.lambda=1e-4 (value parsed as YAML; repeatable)."),
]


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
        err.print(
            f"run folder {info['run_dir']}  device {info['device']}  parameters {info['parameters']:,}", highlight=False
        )
        if info.get("data"):
            err.print(describe_data(info["data"]), highlight=False)
        if info.get("resumed_from"):
            where = info["resumed_from"]
            err.print(f"resuming after epoch {where['epoch']}, step {where['step']}", highlight=False)
        if self.verbose:
            err.print(selection_table(*info["l2"]))
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=1, epoch=0, epochs=self.epochs, loss="…")

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        if self.progress is not None:
            # reset() replaces the task's fields, so every field the columns read is passed again
            self.progress.reset(self.task, total=steps, epoch=epoch, epochs=self.epochs, loss="…")

    def on_step(self, step: int, loss: float | None) -> None:
        if self.progress is not None:
            fields = {"loss": f"{loss:.4f}"} if loss is not None else {}
            self.progress.update(self.task, completed=step, **fields)

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        if self.quiet:
            return
        parts = [f"epoch {row['epoch']}/{self.epochs}", f"step {row['step']}"]
        shown = ("train_data_loss", "penalty", "val_", "lambda")  # penalty_l1 too; ar and tar by name
        parts += [f"{key} {row[key]:.4g}" for key in row if key in ("ar", "tar") or key.startswith(shown)]
        parts += [f"{row['seconds']:.1f}s"]
        err.print("  ".join(parts), highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def describe_data(seen: dict[str, Any]) -> str:
    """`data: 8,209 / 2,785 / 2,785 windows (train/val/test) from rows 8,640 / 2,880 / 2,880 (…)`."""
    names = [n for n in ("train", "holdout", "val", "test") if n in seen]
    text = f"data: {' / '.join(f'{seen[n]:,}' for n in names)} {seen['unit']} ({'/'.join(names)})"
    rows = seen.get("rows")
    if rows:
        unused = f", {rows['unused']:,} unused" if rows.get("unused") else ""
        text += f" from rows {rows['train']:,} / {rows['val']:,} / {rows['test']:,}{unused}; {rows['rule']}"
    return text


def baseline_verdict(result: dict[str, Any], metric: str | None = None) -> str:
    """`vs naive repeat_last (test_loss 0.0811): worse by 4.3%`, or "" without a baseline."""
    from ..metrics import versus_baseline

    vs = versus_baseline(result, metric)
    if vs is None:
        return ""
    verdict = "[green]better[/green]" if vs["beats"] else "[red]worse[/red]"
    return (
        f"vs naive {vs['baseline']} ({vs['metric']} {vs['baseline_value']:.4g}): {verdict} by {abs(vs['change']):.1%}"
    )


def selection_table(columns: list[str], rows: list[tuple[str, tuple[int, ...], list[float | None]]]) -> Table:
    """One row per parameter: its λ, and its λ₁, max-norm c and weight-drop p when those are on."""
    from ..compare import short_number

    table = Table(title="L2 selection: (λ/2)·Σθ² over the marked parameters")
    for column in ("parameter", "shape", *columns):
        table.add_column(column)
    for name, shape, values in rows:
        cells = ["—" if value is None else short_number(value) for value in values]
        table.add_row(name, "×".join(map(str, shape)), *cells)
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
    run_dir: Annotated[
        Optional[Path], typer.Option(help="Write the run into exactly this (new or empty) folder.")
    ] = None,
    resume: Annotated[
        Optional[Path],
        typer.Option(
            help="Continue this run folder from its checkpoints/last.pt, with the config saved in it.",
            file_okay=False,
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="With --resume: continue with a CONFIG or --set that differs from the run's."),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final summary line.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also list which parameters get which λ.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object on stdout.")] = False,
    threads: Threads = None,
    pause_after: Annotated[
        Optional[int],
        typer.Option(
            "--pause-after",
            min=1,
            help="Stop after this epoch with the state saved (status paused); --resume continues it exactly.",
        ),
    ] = None,
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc",
            min=1,
            help="Train this one run on N local processes (torchrun; gloo on CPU, NCCL on CUDA); "
            "train.batch_size stays the global batch.",
        ),
    ] = 1,
) -> None:
    """Train one model from a YAML config (or --resume a run); the last line on stdout is the run folder."""
    if config is None and resume is None:
        raise ConfigError("give a CONFIG file to train, or --resume RUN_DIR to continue a run")
    if nproc > 1:
        from ..distributed import launch_processes, without_option

        cfg = load_config(config, overrides or []) if config is not None else None
        raise typer.Exit(code=launch_processes(nproc, without_option(sys.argv[1:], "--nproc"), cfg))
    if resume is not None and run_dir is not None:
        raise ConfigError("--resume continues its own folder; leave out --run-dir")
    cfg = load_config(config, overrides or []) if config is not None else None
    from ..train import run, use_threads

    use_threads(threads)
    observer = RichObserver(quiet=quiet or as_json, verbose=verbose)
    try:
        if resume is not None:
            from ..resume import resume as resume_run

            result = resume_run(resume, cfg, overrides or [], force, observer, pause_after)
        else:
            result = run(cfg, runs_dir, run_dir, observer, pause_after=pause_after)
    finally:
        observer.close()
        from ..distributed import close_ranks, is_main_process

        close_ranks()
    if not is_main_process():  # under torchrun, rank 0 alone reports
        return
    summary = result.summary
    if as_json:
        print(json.dumps(summary))
        return
    tests = "  ".join(
        f"{k} {v:.4g}" for k, v in summary.items() if k.startswith("test_") and isinstance(v, (int, float))
    )
    best = summary["best_value"]
    err.print(
        f"[green]finished[/green] {summary['status']}: best epoch {summary['best_epoch']} "
        f"({summary['best_metric']} {'—' if best is None else f'{best:.4g}'})  {tests}  {summary['wall_seconds']:.1f}s"
        f"  {baseline_verdict(summary)}".rstrip(),
        highlight=False,
    )
    print(result.run_dir)


@app.command("eval")
def eval_command(
    path: Annotated[Path, typer.Argument(help="A checkpoint file, or a run folder (its best checkpoint).")],
    split: Annotated[Split, typer.Option(help="Split to evaluate.")] = Split.test,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")] = False,
    data: Annotated[
        Optional[Path], typer.Option(help="Evaluate on this file instead, read through the saved pipeline.")
    ] = None,
) -> None:
    """Evaluate a trained model on one split (writes eval-<split>.json into the run folder) or on a new file."""
    from ..evaluate import evaluate_checkpoint
    from ..runs import record_eval

    result = evaluate_checkpoint(path, split.value, device, data=data)
    if data is None:
        record_eval(Path(result["checkpoint"]), split.value, result)
    if as_json:
        print(json.dumps(result))
    else:
        baselines = result.pop("baselines", {})
        shown = result | {f"{name} {key}": value for name, scores in baselines.items() for key, value in scores.items()}
        out.print(metrics_table(f"{result['checkpoint']} on {data or split.value}", shown))
        verdict = baseline_verdict(result | {"baselines": baselines}, f"{result['split']}_loss")
        if verdict:
            out.print(verdict, highlight=False)


@app.command()
def predict(
    path: Annotated[Path, typer.Argument(help="A checkpoint file, or a run folder (its best checkpoint).")],
    data: Annotated[Path, typer.Option(help="File to predict, read through the saved pipeline.")],
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Write the CSV here instead of stdout.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
) -> None:
    """Write predictions as CSV: forecasts per window, step and target (file units), label and
    probabilities, or a language model's next token, probability and surprisal at every position."""
    from ..predict import predict_file, to_csv_text
    from ..runs import write_text

    if output is not None:
        check_output_file(output)
    text = to_csv_text(predict_file(path, data, device))
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
    temperature: Annotated[
        float, typer.Option(min=0.0, help="Softmax temperature; 0 always takes the most likely token.")
    ] = 1.0,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Seed of the sampler.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "cpu",
) -> None:
    """Generate text from a language model: prints the prompt and its continuation."""
    from ..sample import sample_text

    print(sample_text(path, prompt, length, temperature, seed, device))


@config_app.command("show")
def config_show(
    config: ConfigPath,
    overrides: Overrides = None,
    params: Annotated[
        bool,
        typer.Option(
            "--params", help="Instead: build the model and print each parameter's λ (and λ₁, max-norm, weight-drop)."
        ),
    ] = False,
) -> None:
    """Print the resolved, validated config (defaults filled in, overrides applied) as YAML."""
    cfg = load_config(config, overrides or [])
    if not params:
        out.print(yaml.safe_dump(to_plain_dict(cfg), sort_keys=False), end="", highlight=False, markup=False)
        return
    from ..regularizers import describe_terms
    from ..train import build_setup

    setup = build_setup(cfg)
    print_table(selection_table(*describe_terms(setup.model, setup.groups, setup.terms)))


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of the config file, for editors and validators."""
    print(json.dumps(RunConfig.model_json_schema(by_alias=True), indent=2))


# ------------------------------------------------------------------ sweep, compare, report


def comparison_table(comparison: Any, title: str = "runs", width: int | None = None) -> Table:
    """The Rich form of a `compare.Comparison`: best row (first after sorting) in bold green.
    With `width` (a terminal's), only the columns that fit, the varying keys and the metrics
    first; a caption names the rest."""
    direction = "lower" if comparison.mode == "min" else "higher"
    table = Table(title=f"{title} — sorted by {comparison.sort} ({direction} is better)")
    columns, hidden = comparison.fitting_columns(width) if width else (comparison.shown_columns(), [])
    if hidden:
        table.caption = f"{len(hidden)} more: {', '.join(hidden)} (--format csv|json|markdown shows every column)"
    for column in columns:
        table.add_column(column, justify="right" if column in comparison.numeric or column == "n" else "left")
    for index, row in enumerate(comparison.rows):
        table.add_row(*(comparison.cell(row, c) for c in columns), style="bold green" if index == 0 else None)
    return table


def settings_text(overrides: Any) -> str:
    """`l2.lambda=1e-5, model.hidden_size=32`: λ and every number as `compare` prints them."""
    from ..compare import format_setting

    if not isinstance(overrides, dict):
        return str(overrides)
    return ", ".join(f"{key}={format_setting(value)}" for key, value in overrides.items()) or "the base config"


def print_table(table: Table) -> None:
    """To stdout; whole when stdout is a file or a pipe (Rich would cut it to 80 columns)."""
    (out if out.is_terminal else Console(width=250, soft_wrap=True)).print(table)


def print_comparison(comparison: Any, title: str) -> None:
    """A comparison on stdout: on a terminal the columns that fit its width, whole when piped."""
    print_table(comparison_table(comparison, title, out.width if out.is_terminal else None))


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
    backend: Annotated[Backend, typer.Option(help="local (processes on this machine), ray or slurm.")] = Backend.local,
    isolate: Isolate = False,
    ray_address: Annotated[
        Optional[str], typer.Option(help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray).")
    ] = None,
    slurm: SlurmOptions = None,
    select: Annotated[
        Optional[str],
        typer.Option(help="Pick the best configuration by METRIC[:min|max] (mean over seeds); writes best.yaml."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only failures and the result.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")] = False,
) -> None:
    """Run a grid of configurations × seeds; the same command again resumes it. Last stdout line: the sweep folder."""
    from ..sweep import build_spec, dry_run_lines, parse_select, plan_sweep

    spec = build_spec(path, grid or [], seeds, overrides or [])
    folder, runs = plan_sweep(spec, runs_dir, sweep_dir)
    if dry_run:
        print("\n".join(dry_run_lines(spec, runs)))
        return
    metric, mode = parse_select(select)
    from ..launch import Launch, gpu_ids, jobs_for, run_sweep
    from ..sweep import sweep_outcome

    gpus = gpu_ids() if backend is Backend.local else []
    jobs = jobs_for(jobs, gpus, runs_per_gpu, backend.value)
    launch = Launch(jobs, backend.value, ray_address, fail_fast, gpus, threads, isolate, runs_per_gpu=runs_per_gpu or 1)
    launch.slurm = slurm or []
    at_once = "as SLURM schedules them" if backend is Backend.slurm else f"{jobs} at a time"
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


class TableFormatChoice(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


TableFormat = Optional[TableFormatChoice]


class Scheduler(str, enum.Enum):
    halving = "halving"
    hyperband = "hyperband"


SchedulerChoice = Optional[Scheduler]


class Sampler(str, enum.Enum):
    random = "random"
    grid = "grid"
    tpe = "tpe"


def tune_table(result: Any) -> Table:
    """One row per trial: its parameters, the metric at each rung, its end; completed trials first, best first."""
    from ..compare import format_setting

    plan, metric = result.plan, result.plan.metric
    sign = 1 if plan.mode == "min" else -1
    table = Table(title=f"{result.tune_dir} — {metric} at each rung ({'lower' if sign > 0 else 'higher'} is better)")
    keys = [s.key for s in plan.spaces]
    tests = sorted({k for t in result.trials for k in t.metrics if k.startswith("test_")})
    for column in ["trial", *keys, *(f"@{r}" for r in plan.rungs), "state", "epochs", *tests]:
        table.add_column(column, justify="left" if column in ("trial", "state") else "right")

    def last(trial) -> float:
        values = [v for v in trial.values.values() if isinstance(v, (int, float))]
        return sign * values[-1] if values else float("inf")

    chosen = (result.selection or {}).get("trial")
    for t in sorted(result.trials, key=lambda t: (t.state != "completed", -t.rung, last(t), t.number)):
        cells = [t.name.split("-", 2)[1], *(format_setting(t.params.get(k)) for k in keys)]
        cells += [format_cell(t.values.get(r)) for r in plan.rungs]
        cells += [t.state, str(t.epochs), *(format_cell(t.metrics.get(k)) for k in tests)]
        table.add_row(*cells, style="bold green" if t.number == chosen else None)
    return table


def format_cell(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


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
            "so one bracket trains every trial to the end."
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
    backend: Annotated[Backend, typer.Option(help="local (processes on this machine), ray or slurm.")] = Backend.local,
    isolate: Isolate = False,
    ray_address: Annotated[
        Optional[str], typer.Option(help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray).")
    ] = None,
    slurm: SlurmOptions = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only failures and the result.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")] = False,
) -> None:
    """Search hyperparameters with successive halving (synchronous, per bracket): trials pause at
    rung epochs and the best 1/eta resume exactly. The same command continues it. Last stdout line: the tune folder."""
    from ..tune_plan import TuneSpec, epoch_budget, plan_lines, plan_tune

    spec = TuneSpec(
        config,
        space,
        overrides or [],
        sampler.value,
        trials,
        seed,
        eta,
        min_epochs,
        max_epochs,
        grid_points,
        storage,
        scheduler=(scheduler or Scheduler.halving).value,
    )
    plan = plan_tune(spec, runs_dir, tune_dir)
    from ..launch import Launch, gpu_ids, jobs_for

    gpus = gpu_ids() if backend is Backend.local else []
    jobs = jobs_for(jobs, gpus, runs_per_gpu, backend.value)
    if dry_run:
        print("\n".join(plan_lines(plan, jobs)))
        return
    from ..tune import run_tune

    launch = Launch(jobs, backend.value, ray_address, False, gpus, threads, isolate, runs_per_gpu=runs_per_gpu or 1)
    launch.slurm = slurm or []
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


@app.command()
def compare(
    paths: Annotated[list[str], typer.Argument(help="Run folders, sweep folders or globs (quote them).")],
    sort: Annotated[
        Optional[str],
        typer.Option(help="Column or summary.json number to sort by (default: the early-stopping metric)."),
    ] = None,
    by_seed: Annotated[
        Optional[bool],
        typer.Option(
            "--by-seed/--no-by-seed", help="Group runs that differ only in seed (default: when only seeds differ)."
        ),
    ] = None,
    csv_path: Annotated[
        Optional[Path], typer.Option("--csv", help="Also write the table as CSV to this file (- for stdout).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as one JSON object on stdout.")] = False,
    columns: Columns = None,
    output_format: Annotated[
        TableFormat,
        typer.Option(
            "--format",
            help="table (on a terminal: the columns that fit), csv, json or markdown (every column) on stdout.",
        ),
    ] = None,
) -> None:
    """One row per run: the config keys that differ, best and test metrics, vs the naive baseline, gap,
    weight norm, epochs, time. Runs of different tasks get one table each."""
    from ..compare import compare_by_task, tables_to_csv, tables_to_json
    from ..runs import write_text

    if csv_path is not None and str(csv_path) != "-":
        check_output_file(csv_path)
    tables = compare_by_task(paths, sort=sort, by_seed=by_seed, columns=column_list(columns))
    if output_format is not None and output_format is not TableFormatChoice.table:
        if output_format is TableFormatChoice.csv:
            print(tables_to_csv(tables), end="")
        elif output_format is TableFormatChoice.json:
            print(json.dumps(tables_to_json(tables)))
        else:
            print("\n".join(f"### {c.task or 'runs'} runs\n\n{c.to_markdown()}" for c in tables), end="")
        return
    if csv_path is not None:
        if str(csv_path) == "-":
            print(tables_to_csv(tables), end="")
            return
        write_text(csv_path, tables_to_csv(tables))
        err.print(f"wrote {csv_path}", highlight=False)
    if as_json:
        print(json.dumps(tables_to_json(tables)))
    else:
        for comparison in tables:
            print_comparison(comparison, f"{comparison.task or 'runs'} runs")


@app.command()
def diff(
    run_a: Annotated[Path, typer.Argument(help="A run folder.")],
    run_b: Annotated[Path, typer.Argument(help="Another run folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the difference as one JSON object on stdout.")] = False,
) -> None:
    """Two runs side by side: the config keys that differ, then every final number with its change."""
    from ..compare import format_setting, short_number
    from ..run_diff import change, diff_runs

    result = diff_runs(run_a, run_b)
    if as_json:
        print(json.dumps(result.to_json()))
        return
    table = Table(title=f"A {run_a} ({result.status[0]})  vs  B {run_b} ({result.status[1]})")
    for name in ("", "A", "B", "B − A"):
        table.add_column(name, justify="left" if not name else "right")
    for key, a, b in result.config or [("(configs are the same)", None, None)]:
        table.add_row(key, "" if a is None else format_setting(a), "" if b is None else format_setting(b), "")
    table.add_section()
    for key, a, b in result.metrics:
        delta = change(a, b)
        shown = lambda v: "—" if v is None else short_number(v)  # noqa: E731
        table.add_row(key, shown(a), shown(b), "" if delta is None else f"{delta:+.4g}")
    print_table(table)


@app.command()
def report(
    paths: Annotated[list[str], typer.Argument(help="Run folders, sweep folders or globs (quote them).")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for the PNGs, report.md and report.html.")
    ] = Path("report"),
    sort: Annotated[Optional[str], typer.Option(help="Column to sort the report's table by.")] = None,
    columns: Columns = None,
) -> None:
    """Plot learning curves, the λ curve, weight and gradient norms; write report.md. Last stdout line: report.md."""
    from ..report import write_report

    written = write_report(paths, output, sort=sort, columns=column_list(columns))
    for path in [*written.figures, written.html]:
        err.print(f"wrote {path}", highlight=False)
    print(written.markdown)


def column_list(columns: str | None) -> list[str] | None:
    """`--columns a,b,c` as a list (None: the default columns)."""
    return [c.strip() for c in columns.split(",") if c.strip()] if columns else None


def check_output_file(path: Path) -> None:
    """Before any work: an output file must be writable where it is asked for."""
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; give a file name for the output")
    if not path.parent.is_dir():
        raise ConfigError(f"{path}: its folder {path.parent} does not exist")
