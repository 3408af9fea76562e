"""Issue 12's ablation: L2 beside the regularizers people use with it, per task, through the CLI.

Rows (each trained to the end of its schedule; the selection metric is the task's validation one):
- plain:          λ = 0, nothing else (the reference for the time ratio);
- L2 alone:       the best λ of the grid (`--lambdas`);
- + locked:       that λ, plus locked dropout on the inputs, between the layers and on the outputs;
- + weight-drop:  that λ, plus DropConnect on weight_hh;
- + AR/TAR:       that λ, plus activation and temporal activation regularization;
- all together:   that λ, locked + weight-drop + AR/TAR (+ embedding dropout for token inputs);
- all, λ re-tuned: the λ grid again with everything on: does the best λ move?
- L1 instead:     the best λ₁ of `--l1-lambdas`, no L2;
- elastic net:    the best λ and the best λ₁ together;
- final (ptb, `--final`): configs/ptb_awd_small.yaml as written (its full schedule).
Each row reports its test metric, the median seconds per epoch and that over plain's. Run folders
are kept under --out; a finished run is read back, not retrained, and a stopped one resumes from its
last.pt, so a stopped benchmark continues.

    RNNL2_DATA=/work/shared/data python benchmarks/regularizers.py --task trec --task min_temperatures
    RNNL2_DATA=/work/shared/data python benchmarks/regularizers.py --task ptb --epochs 6 --jobs 2 --final
    python benchmarks/regularizers.py --smoke        # tiny made-up tasks: checks the driver in a minute

PTB rows use Zaremba's small schedule shortened to --epochs (lr held for the first 4/13 of the
epochs, then halved after each); the final row uses the config's own (20 epochs, see its header).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rnnl2.runs import read_metrics, read_summary
from run_folder import rnnl2, train_args

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Task:
    config: Path
    val: str  # selection metric (validation)
    test: str  # reported metric
    higher: bool  # whether a larger metric is better
    lambdas: list[float]
    l1_lambdas: list[float]
    locked: list[str]
    weight_drop: list[str]
    ar_tar: list[str]
    embedding: list[str] = field(default_factory=list)  # token inputs only
    schedule: list[str] = field(default_factory=list)  # overrides every ablation row gets


ACCURACY = dict(val="val_accuracy", test="test_accuracy", higher=True)
TASKS = {
    "ptb": Task(
        ROOT / "configs" / "ptb_word.yaml",
        val="val_perplexity",
        test="test_perplexity",
        higher=False,
        # grids cut to what 2 cores can train in one 3-hour session (12 runs of ≈ 25 minutes on one thread):
        # λ = 1e-5 was the best of 13 epochs (ptb_word.yaml); λ₁ = 1e-5 at lr 35 shrinks every weight by
        # ≈ 0.46 an epoch, so only 1e-7 and 1e-6 bracket the L1 that matches λ's pull on weights of ≈ 0.05
        lambdas=[0.0, 3e-6, 1e-5],
        l1_lambdas=[1e-7, 1e-6],
        # the strengths of configs/ptb_awd_small.yaml (AWD's 0.3 / 0.4 / 0.1 over-regularize 2x200)
        locked=["model.locked_dropout=true", "model.input_dropout=0.2", "model.dropout=0.2"],
        weight_drop=["model.weight_drop=0.2"],
        ar_tar=["regularization.ar=2", "regularization.tar=1"],
        embedding=["model.embedding_dropout=0.05"],
    ),
    "trec": Task(
        ROOT / "configs" / "trec.yaml",
        **ACCURACY,
        lambdas=[0.0, 1e-5, 1e-4, 1e-3],
        l1_lambdas=[1e-6, 1e-5, 1e-4],
        locked=["model.locked_dropout=true", "model.input_dropout=0.2"],  # dropout 0.3 is the config's
        weight_drop=["model.weight_drop=0.3"],
        ar_tar=["regularization.ar=1", "regularization.tar=1"],
        embedding=["model.embedding_dropout=0.1"],
    ),
    "min_temperatures": Task(
        ROOT / "configs" / "min_temperatures.yaml",
        val="val_rmse",
        test="test_rmse_orig",
        higher=False,
        lambdas=[0.0, 1e-5, 1e-4, 1e-3],
        l1_lambdas=[1e-6, 1e-5, 1e-4],
        locked=["model.locked_dropout=true", "model.input_dropout=0.1", "model.dropout=0.1"],
        weight_drop=["model.weight_drop=0.2"],
        ar_tar=["regularization.ar=0.1", "regularization.tar=0.1"],
    ),
}


def shortened_zaremba(epochs: int) -> list[str]:
    """Zaremba's small schedule over `epochs`: lr held for the first 4/13, then halved after each epoch."""
    hold = max(1, round(epochs * 4 / 13))
    milestones = list(range(hold, epochs))
    if not milestones:
        return [f"train.epochs={epochs}", "optimizer.scheduler.name=none"]
    return [f"train.epochs={epochs}", f"optimizer.scheduler.milestones={milestones}"]


def train(config: Path, overrides: list[str], run_dir: Path, threads: int) -> dict:
    """One `rnnl2 train` (or the summary of an earlier one); adds the median seconds per epoch."""
    args = train_args(config, overrides, run_dir)
    if args is not None:
        rnnl2(*args, "-q", "--threads", str(threads))  # exit 1 (diverged) is still a row
    summary = read_summary(run_dir)
    if summary is None:
        raise RuntimeError(f"{run_dir}: no summary.json after `rnnl2 {' '.join(args or [])}`")
    rows = read_metrics(run_dir)
    summary["seconds_per_epoch"] = statistics.median(r["seconds"] for r in rows) if rows else math.nan
    return summary


def metric(summary: dict, key: str, higher: bool) -> float:
    value = summary.get(key)
    return value if isinstance(value, (int, float)) else (-math.inf if higher else math.inf)


def best(task: Task, runs: dict[float, dict]) -> float:
    """The coefficient whose run has the best validation metric."""
    pick = max if task.higher else min
    return pick(runs, key=lambda lam: metric(runs[lam], task.val, task.higher))


def ablate(name: str, task: Task, out: Path, pool: Executor, threads: int, final: bool) -> list[dict]:
    """Every row of one task, as dicts for the table and results.json.

    Runs go to `pool` as soon as what they depend on is known (the grids at once; a row at the best λ
    when the L2 grid has ended), so `--jobs 2` keeps both workers busy."""
    folder = out / name
    tag = lambda value: f"{value:g}"  # noqa: E731

    def run(config: Path, overrides: list[str], slug: str) -> Future:
        return pool.submit(train, config, [*task.schedule, *overrides], folder / slug, threads)

    def grid(prefix: str, key: str, values: list[float], extra: list[str]) -> dict[float, Future]:
        return {v: run(task.config, [*extra, f"{key}={v}"], f"{prefix}-{tag(v)}") for v in values}

    def ended(futures: dict[float, Future]) -> dict[float, dict]:
        return {v: future.result() for v, future in futures.items()}

    everything = [*task.locked, *task.weight_drop, *task.ar_tar, *task.embedding]
    alone_futures = grid("l2", "l2.lambda", task.lambdas, [])
    l1_futures = grid("l1", "l1.lambda", task.l1_lambdas, ["l2.lambda=0"])
    retuned_futures = grid("all", "l2.lambda", task.lambdas, everything)
    alone = ended(alone_futures)
    lam = best(task, alone)
    plain = alone_futures.get(0.0) or run(task.config, ["l2.lambda=0"], "l2-0")
    added = {}
    for label, extra in [
        ("+ locked dropout", task.locked),
        ("+ weight-drop", task.weight_drop),
        ("+ AR/TAR", task.ar_tar),
    ]:
        slug = label.strip("+ ").replace(" ", "_").replace("/", "_").lower()
        added[label] = (
            f"λ = {tag(lam)}; {' '.join(extra)}",
            run(task.config, [*extra, f"l2.lambda={lam}"], f"{slug}-{tag(lam)}"),
        )
    together = retuned_futures.get(lam) or run(task.config, [*everything, f"l2.lambda={lam}"], f"all-{tag(lam)}")
    l1_runs = ended(l1_futures)
    lam1 = best(task, l1_runs)
    elastic = run(task.config, [f"l2.lambda={lam}", f"l1.lambda={lam1}"], f"elastic-{tag(lam)}-{tag(lam1)}")
    final_run = None
    if final and name == "ptb":
        final_config = ROOT / "configs" / "ptb_awd_small.yaml"
        final_run = pool.submit(train, final_config, [], folder / "final", threads)
    retuned = ended(retuned_futures)
    lam_all = best(task, retuned)
    rows = [
        ("plain", "λ = 0", plain.result()),
        ("L2 alone", f"λ = {tag(lam)} (best of {len(task.lambdas)})", alone[lam]),
        *[(label, setting, future.result()) for label, (setting, future) in added.items()],
        ("all together", f"λ = {tag(lam)}", together.result()),
        (
            "all, λ re-tuned",
            f"best λ = {tag(lam_all)} ({'moved' if lam_all != lam else 'unchanged'})",
            retuned[lam_all],
        ),
        ("L1 instead of L2", f"λ₁ = {tag(lam1)} (best of {len(task.l1_lambdas)})", l1_runs[lam1]),
        ("elastic net", f"λ = {tag(lam)}, λ₁ = {tag(lam1)}", elastic.result()),
    ]
    if final_run is not None:
        rows.append(("final: ptb_awd_small.yaml", "its own schedule", final_run.result()))
    plain_seconds = rows[0][2]["seconds_per_epoch"]
    return [
        {
            "task": name,
            "row": label,
            "setting": setting,
            task.test: summary.get(task.test),
            task.val: summary.get(task.val),
            "seconds_per_epoch": summary["seconds_per_epoch"],
            "time_ratio": summary["seconds_per_epoch"] / plain_seconds,
            "status": summary.get("status"),
            "run_dir": summary.get("run_dir"),
        }
        for label, setting, summary in rows
    ]


def markdown(name: str, task: Task, rows: list[dict]) -> str:
    lines = [f"| {name} | setting | {task.test} | {task.val} | s/epoch | × plain |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        number = lambda v: f"{v:.4g}" if isinstance(v, (int, float)) else "—"  # noqa: E731
        lines.append(
            f"| {r['row']} | {r['setting']} | {number(r[task.test])} | {number(r[task.val])} | "
            f"{r['seconds_per_epoch']:.1f} | {r['time_ratio']:.2f} |"
        )
    return "\n".join(lines)


def smoke_tasks(folder: Path) -> dict[str, Task]:
    """Tiny made-up stand-ins for the three tasks (a char LM, a token classifier, a sine forecast)."""
    words = ["the cat sat", "a dog ran away", "birds fly high", "we like tea", "rain again today"]
    (folder / "lm.txt").write_text(" ".join(words * 20) + "\n")
    (folder / "cls.tsv").write_text("".join(f"{i % 2}\t{s}\n" for i, s in enumerate(words * 12)))
    common = {"device": "cpu", "train": {"epochs": 2, "batch_size": 8}}
    configs = {
        "lm": {"data": {"kind": "text_lm", "path": str(folder / "lm.txt"), "level": "char", "bptt": 8}},
        "cls": {
            "data": {"kind": "text_classification", "path": str(folder / "cls.tsv"), "format": "tsv", "header": False}
            | {"text_field": 1, "label_field": 0}
        },
        "sine": {"data": {"kind": "sine", "lookback": 8, "horizon": 2, "num_train": 64, "num_val": 16, "num_test": 16}},
    }
    tasks = {}
    for name, raw in configs.items():
        model = {"hidden_size": 8, "embedding_dim": 4, "num_layers": 2}
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"name": name, **common, **raw, "model": model}))
        metrics = {"lm": ("val_perplexity", "test_perplexity", False), "cls": ("val_accuracy", "test_accuracy", True)}
        val, test, higher = metrics.get(name, ("val_rmse", "test_rmse", False))
        tasks[name] = Task(
            path,
            val=val,
            test=test,
            higher=higher,
            lambdas=[0.0, 1e-3],
            l1_lambdas=[1e-4],
            locked=["model.locked_dropout=true", "model.input_dropout=0.2", "model.dropout=0.2"],
            weight_drop=["model.weight_drop=0.3"],
            ar_tar=["regularization.ar=1", "regularization.tar=1"],
            embedding=["model.embedding_dropout=0.1"] if name != "sine" else [],
        )
    return tasks


def positive(text: str) -> int:
    """argparse type: a whole number ≥ 1 (a clear usage error instead of the pool's ValueError)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", action="append", choices=sorted(TASKS), help="repeatable; default: all three")
    parser.add_argument("--epochs", type=int, default=6, help="ptb ablation rows: Zaremba's schedule shortened to this")
    parser.add_argument("--final", action="store_true", help="ptb: also train configs/ptb_awd_small.yaml in full")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--jobs", type=positive, default=1, help="runs trained at once (each with --threads)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-regularizers")
    parser.add_argument("--smoke", action="store_true", help="tiny made-up tasks instead (checks the driver)")
    args = parser.parse_args()
    scratch = tempfile.TemporaryDirectory() if args.smoke else None
    if scratch is not None:
        tasks, args.out = smoke_tasks(Path(scratch.name)), Path(scratch.name) / "runs"
    else:
        tasks = {name: TASKS[name] for name in args.task or sorted(TASKS)}
        if "ptb" in tasks:
            tasks["ptb"].schedule = shortened_zaremba(args.epochs)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for name, task in tasks.items():
            rows = ablate(name, task, args.out, pool, args.threads, args.final)
            results += rows
            print(markdown(name, task, rows) + "\n", flush=True)
    saved = args.out / "results.json"
    earlier = json.loads(saved.read_text()) if saved.exists() else []
    kept = [row for row in earlier if row.get("task") not in tasks]  # the tasks not run this time
    saved.write_text(json.dumps(kept + results, indent=2))
    print(f"results: {saved}")
    if scratch is not None:
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
