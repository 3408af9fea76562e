"""How results look on a terminal: the training progress, data and baseline lines, and the
Rich tables of selection, metrics, comparisons and tune trials. Nothing here decides anything."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from ..observer import Observer
from .console import err, out

if TYPE_CHECKING:
    from rich.progress import Progress


class RichObserver(Observer):
    """Progress for `train`: a Rich bar on a terminal, one plain line per epoch otherwise."""

    def __init__(self, quiet: bool, verbose: bool):
        self.quiet, self.verbose = quiet, verbose
        self.live = err.is_terminal and not quiet
        self.progress: Progress | None = None
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
            if loss is None:  # the loss is read from the device every few steps only
                self.progress.update(self.task, completed=step)
            else:
                self.progress.update(self.task, completed=step, loss=f"{loss:.4f}")

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


def tune_table(result: Any) -> Table:
    """One row per trial: its parameters, the metric at each rung, its end; completed trials first, best first."""
    from ..compare import format_setting

    plan, metric = result.plan, result.plan.metric
    sign = 1 if plan.mode == "min" else -1
    table = Table(title=f"{result.tune_dir} — {metric} at each rung ({'lower' if sign > 0 else 'higher'} is better)")
    keys = [s.key for s in plan.spaces]
    tests = sorted({k for t in result.trials for k in t.metrics if k.startswith("test_")})
    values = ["best"] if plan.late else [f"@{r}" for r in plan.rungs]  # late: each fork ends at its own epoch
    for column in ["trial", *keys, *values, "state", "epochs", *tests]:
        table.add_column(column, justify="left" if column in ("trial", "state") else "right")

    def last(trial) -> float:
        values = [v for v in trial.values.values() if isinstance(v, (int, float))]
        return sign * values[-1] if values else float("inf")

    chosen = (result.selection or {}).get("trial")
    for t in sorted(result.trials, key=lambda t: (t.state != "completed", -t.rung, last(t), t.number)):
        cells = [t.name.split("-", 2)[1], *(format_setting(t.params.get(k)) for k in keys)]
        cells += [format_cell(t.latest_value())] if plan.late else [format_cell(t.values.get(r)) for r in plan.rungs]
        cells += [t.state, str(t.epochs), *(format_cell(t.metrics.get(k)) for k in tests)]
        table.add_row(*cells, style="bold green" if t.number == chosen else None)
    return table


def format_cell(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
