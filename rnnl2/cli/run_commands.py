"""The commands on one run: train, eval, predict, sample, fork, and `config show|schema`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml

from ..config import RunConfig, load_config, to_plain_dict
from ..config.base import MAX_SEED
from ..errors import ConfigError
from .app import app, config_app
from .console import err, out
from .options import ConfigPath, ForkAt, Overrides, Split, Threads, check_output_file
from .render import RichObserver, baseline_verdict, metrics_table, print_table, selection_table


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
    from ..train import run
    from ..setup import use_threads

    use_threads(threads)
    observer = RichObserver(quiet=quiet or as_json, verbose=verbose)
    finished = False
    try:
        if resume is not None:
            from ..resume import resume as resume_run

            result = resume_run(resume, cfg, overrides or [], force, observer, pause_after)
        else:
            assert cfg is not None  # without --resume a CONFIG was required above
            result = run(cfg, runs_dir, run_dir, observer, pause_after=pause_after)
        finished = True
    finally:
        observer.close()
        from ..distributed import close_ranks, is_main_process, mark_rank_done

        if not finished:
            close_ranks()
    if is_main_process():  # under torchrun, rank 0 alone reports
        report_finished(result.summary, result.run_dir, as_json)
    mark_rank_done()  # reported before the ranks part: a teardown abort cannot lose the line
    close_ranks(finished=True)


def report_finished(summary: dict, run_dir: Path, as_json: bool) -> None:
    """The end of `train`: the summary as JSON, or a finished line on stderr and the folder on stdout."""
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
    print(run_dir)


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


@app.command()
def fork(
    run_dir: Annotated[Path, typer.Argument(help="The run folder to start from (left as it is).")],
    new_dir: Annotated[Path, typer.Argument(help="The new run folder (must not exist).")],
    at: Annotated[ForkAt, typer.Option(help="Start from its best epoch's checkpoint, or from its last.")] = ForkAt.best,
) -> None:
    """A new run that starts where RUN_DIR was at its best epoch: continue it with other settings by
    `rnnl2 train --resume NEW_DIR --force --set l2.lambda=…`. Last stdout line: the new folder."""
    from ..fork import fork_run

    origin = fork_run(run_dir, new_dir, at.value)
    err.print(f"forked {run_dir} at epoch {origin['epoch']} (checkpoints/{at.value}.pt)")
    print(new_dir)


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
    from ..setup import build_setup

    setup = build_setup(cfg)
    print_table(selection_table(*describe_terms(setup.model, setup.groups, setup.terms)))


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of the config file, for editors and validators."""
    print(json.dumps(RunConfig.model_json_schema(by_alias=True), indent=2))
