"""Figures and a report of a set of runs (matplotlib, headless): learning curves, the λ curve
(each with the naive baseline as a dashed line), adapted λ per epoch (`l2.adapt`), weight and
gradient norms per epoch, and report.md/report.html with the comparison tables (one per task).
Reads run folders through `compare`; never imports torch."""

from __future__ import annotations

import html
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from matplotlib.ticker import MaxNLocator  # pyplot (and its backend) is imported in write_report

from .compare import Comparison, Run, compare_by_task, compare_runs, differing_keys, load_runs, short_number
from .errors import Rnnl2Error
from .report_style import LAMBDA, colours, draw_baseline, group_style, outcome
from .runs import write_text


@dataclass(frozen=True)
class ReportFiles:
    """What `write_report` wrote, by role."""

    markdown: Path
    html: Path
    figures: list[Path]


def frozen(values: Sequence[Any]) -> str:
    """A hashable, order-independent key for config values that may be lists or mappings
    (`l2.apply_to: [weight_ih]`, `l2.lambdas: {head: 0.5}`)."""
    return json.dumps(list(values), sort_keys=True, default=str)


def group_runs(runs: list[Run]) -> tuple[list[str], list[tuple[dict[str, Any], list[Run]]]]:
    """Runs that differ only in seed form one group; groups sorted by λ when λ varies."""
    keys = [k for k in differing_keys(runs) if k != "seed"]
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(frozen([run.config.get(k) for k in keys]), []).append(run)
    out = [({k: members[0].config.get(k) for k in keys}, members) for members in groups.values()]
    out.sort(key=lambda g: tuple(sort_value(g[0].get(k)) for k in keys))
    return keys, out


def sort_value(value: Any) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str))


def label(values: dict[str, Any]) -> str:
    parts = []
    for key, value in values.items():
        name = "λ" if key == LAMBDA else key.rsplit(".", 1)[-1]
        parts.append(f"{name}={short_number(value)}" if isinstance(value, float) else f"{name}={value}")
    return ", ".join(parts) or "all runs"


def loss_unit(runs: list[Run]) -> str:
    first = runs[0].metrics[0] if runs[0].metrics else {}
    if "val_mse" in first:
        return "MSE"
    if "val_perplexity" in first:
        return "cross-entropy (nats/token)"
    return "cross-entropy (nats)"


def per_epoch(members: list[Run], key: str) -> tuple[list[int], list[float], list[float]]:
    """Mean and std over seeds of `key` at each epoch every seed reached."""
    epochs = min(len(r.metrics) for r in members)
    xs, means, stds = [], [], []
    for i in range(epochs):
        values = [r.metrics[i].get(key) for r in members]
        values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        if values:
            xs.append(members[0].metrics[i].get("epoch", i + 1))
            means.append(statistics.fmean(values))
            stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
    return xs, means, stds


def plot_curves(ax, groups, palette, key: str, style: str = "-", with_label: bool = True) -> None:
    for (values, members), colour in zip(groups, palette):
        xs, means, stds = per_epoch(members, key)
        suffix, look = group_style(members)
        look = {"markersize": 3, **look}
        if "linestyle" not in look:
            look["linestyle"] = style.strip("o") or "-"
        ax.plot(xs, means, color=colour, label=label(values) + suffix if with_label else None, **look)
        if len(members) > 1:  # seeds as a band of ± one standard deviation
            ax.fill_between(
                xs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)], color=colour, alpha=0.2
            )


def figure_learning_curves(runs, keys, groups, palette, out: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    plot_curves(axes[0], groups, palette, "train_data_loss")
    plot_curves(axes[1], groups, palette, "val_loss")
    draw_baseline([axes[1]], runs, "val_loss")
    unit = loss_unit(runs)
    for ax, title in zip(axes, ("training data loss (without the L2 term)", "validation loss")):
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(unit)
    seeds = "\n(mean ± std over seeds)" if any(len(m) > 1 for _, m in groups) else ""
    axes[1].legend(title=label_title(keys) + seeds, fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle("Learning curves")
    return save(fig, out / "learning_curves.png")


def label_title(keys: list[str]) -> str:
    return ", ".join("λ" if k == LAMBDA else k for k in keys) or "runs"


def figure_norms(groups, palette, keys, out: Path, key: str, ylabel: str, title: str, name: str, log: bool) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    plot_curves(ax, groups, palette, key)
    ax.set(title=title, xlabel="epoch", ylabel=ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(title=label_title(keys), fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return save(fig, out / name)


def figure_lambda_trajectory(groups, palette, keys, out: Path) -> Path | None:
    """λ against epoch (log scale) for runs that adapted it (`l2.adapt`): one line per run group,
    one line style per adapted λ (`lambda`, or `lambda/<entry>` per group); None if none adapted."""
    import matplotlib.pyplot as plt

    names = list(
        dict.fromkeys(k for _, members in groups for r in members for k in r.metrics[-1] if k.split("/")[0] == "lambda")
    )
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (values, members), colour in zip(groups, palette):
        for name, style in zip(names, ["-", "--", ":", "-."] * len(names)):
            xs, means, _ = per_epoch(members, name)
            entry = f" · {name.removeprefix('lambda/')}" if len(names) > 1 else ""
            if xs:
                ax.plot(xs, means, style, color=colour, marker="o", markersize=3, label=label(values) + entry)
    ax.set(title="Adapted λ per epoch (l2.adapt)", xlabel="epoch", ylabel="λ at the epoch's end (log scale)")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, which="both")
    ax.legend(title=label_title(keys), fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return save(fig, out / "lambda_trajectory.png")


def figure_lambda_curve(comparison: Comparison, runs: list[Run], out: Path) -> Path | None:
    """Metrics against λ on a log axis; λ=0 in its own narrow panel on the left; seed error bars."""
    import matplotlib.pyplot as plt

    rows = [r for r in comparison.rows if isinstance(r.get(LAMBDA), (int, float))]
    if len({r[LAMBDA] for r in rows}) < 2:
        return None
    others = [k for k in comparison.keys if k not in (LAMBDA, "seed")]
    metric = comparison.sort if comparison.sort.startswith("val_") else "val_loss"
    panels = [
        (
            "loss",
            [
                (metric, "validation (best checkpoint)", "o-"),
                ("train_at_best", "training data loss (same epoch)", "s--"),
            ],
        )
    ]
    if any(r.get("val_accuracy") is not None for r in rows):
        panels.append(("accuracy", [("val_accuracy", "validation", "o-"), ("test_accuracy", "test", "^:")]))
    fig, axes = plt.subplots(
        len(panels),
        2,
        figsize=(9, 3.8 * len(panels)),
        squeeze=False,
        gridspec_kw={"width_ratios": [1, 6], "wspace": 0.05},
        sharey="row",
    )
    distinct = {frozen([r.get(k) for k in others]): tuple(r.get(k) for k in others) for r in rows}
    lines = sorted(distinct.values(), key=lambda t: [sort_value(v) for v in t])
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    pruned_dirs = {str(r.run_dir) for r in runs if outcome(r) == "pruned"}  # their value is at their rung
    for row_index, (quantity, series) in enumerate(panels):
        zero_ax, log_ax = axes[row_index]
        for line_index, line in enumerate(lines):
            members = sorted(
                (r for r in rows if frozen([r.get(k) for k in others]) == frozen(line)), key=lambda r: r[LAMBDA]
            )
            for column, name, style in series:
                points = [
                    (r[LAMBDA], r.get(column), r.get(f"{column}_std") or 0.0)
                    for r in members
                    if r.get(column) is not None and str(r.get("run_dir")) not in pruned_dirs
                ]
                stopped = [
                    (r[LAMBDA], r.get(column))
                    for r in members
                    if r.get(column) is not None and str(r.get("run_dir")) in pruned_dirs
                ]
                tag = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(others, line))
                colour = cycle[(line_index * len(series) + series.index((column, name, style))) % len(cycle)]
                positive = [p for p in points if p[0] > 0]
                zero = [p for p in points if p[0] == 0]
                if positive:
                    log_ax.errorbar(
                        [p[0] for p in positive],
                        [p[1] for p in positive],
                        yerr=[p[2] for p in positive],
                        fmt=style,
                        color=colour,
                        capsize=3,
                        label=f"{name}{' — ' + tag if tag else ''}",
                    )
                for p in zero:
                    zero_ax.errorbar(
                        [0], [p[1]], yerr=[p[2]], fmt=style[0], color=colour, capsize=3, markersize=8, mfc="none"
                    )
                if stopped:  # hollow and faded, off the line: an under-trained value, not the curve
                    for ax, xs in (
                        (log_ax, [x for x, _ in stopped if x > 0]),
                        (zero_ax, [0 for x, _ in stopped if x == 0]),
                    ):
                        ys = [y for x, y in stopped if (x > 0) == (ax is log_ax)]
                        if xs:
                            ax.plot(
                                xs,
                                ys,
                                style[0],
                                color=colour,
                                mfc="none",
                                alpha=0.45,
                                markersize=7,
                                linestyle="none",
                                label=f"{name}: pruned at its rung (best so far)" if ax is log_ax else None,
                            )
        draw_baseline([zero_ax, log_ax], runs, metric if quantity == "loss" else "val_accuracy")
        log_ax.set_xscale("log")
        log_ax.grid(alpha=0.3, which="both")
        log_ax.legend(fontsize=8)
        log_ax.set_xlabel("λ (log scale)")
        zero_ax.set_xticks([0], ["λ = 0"])
        zero_ax.set_xlim(-1, 1)
        zero_ax.grid(alpha=0.3)
        zero_ax.set_ylabel(f"loss, {loss_unit(runs)}" if quantity == "loss" else "accuracy (fraction correct)")
        log_ax.tick_params(labelleft=False)
    n = max((r.get("n", 1) for r in rows), default=1)
    fig.suptitle(f"λ curve: metrics at the best epoch{f', mean ± std over {n} seeds' if n > 1 else ''}")
    return save(fig, out / "lambda_curve.png")


def save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def markdown_table(comparison: Comparison) -> str:
    columns = comparison.shown_columns()
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(comparison.cell(row, c) for c in columns) + " |" for row in comparison.rows]
    return "\n".join(lines)


def html_table(comparison: Comparison) -> str:
    columns = comparison.shown_columns()
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(comparison.cell(r, c))}</td>" for c in columns) + "</tr>"
        for r in comparison.rows
    )
    return f"<table border=1 cellpadding=4><tr>{head}</tr>{body}</table>"


def write_report(
    paths: Sequence[str | Path], out: Path, sort: str | None = None, columns: Sequence[str] | None = None
) -> ReportFiles:
    """All figures, report.md and report.html for the runs under `paths`, in the folder `out`;
    `columns` picks the tables' numeric columns as `compare --columns` does (the figures use the
    metrics they need either way)."""
    import matplotlib

    if out.exists() and not out.is_dir():
        raise Rnnl2Error(f"--output {out}: exists and is not a folder; give a folder for the report")
    matplotlib.use("Agg")  # headless: no display needed
    runs = [r for r in load_runs(paths) if r.metrics]
    if not runs:
        raise Rnnl2Error(f"no run with logged epochs (metrics.jsonl) in {', '.join(map(str, paths))}")
    out.mkdir(parents=True, exist_ok=True)
    keys, groups = group_runs(runs)
    palette = colours(groups, keys)
    by_seed = any(len(members) > 1 for _, members in groups)
    comparison = compare_runs(paths, sort=sort, by_seed=by_seed, runs=runs)
    add_train_at_best(comparison, runs)
    shown = compare_runs(paths, sort=sort, by_seed=by_seed, runs=runs, columns=columns) if columns else comparison
    tables = [shown] if shown.task else compare_by_task(paths, sort=sort, by_seed=by_seed, runs=runs, columns=columns)
    figures = [
        figure_learning_curves(runs, keys, groups, palette, out),
        figure_lambda_curve(comparison, runs, out),
        figure_lambda_trajectory(groups, palette, keys, out),
        figure_norms(
            groups,
            palette,
            keys,
            out,
            "weight_norm",
            "‖θ‖₂ of the penalized parameters",
            "Weight norm per epoch",
            "weight_norm.png",
            log=False,
        ),
        figure_norms(
            groups,
            palette,
            keys,
            out,
            "grad_norm",
            "mean ‖∇(loss)‖₂ per step, all parameters (log scale)",
            "Gradient norm per epoch",
            "grad_norm.png",
            log=True,
        ),
    ]
    figures = [f for f in figures if f is not None]
    title = f"rnnl2 report: {len(runs)} runs"
    images = "\n\n".join(f"![{f.stem}]({f.name})" for f in figures)
    files = ReportFiles(markdown=out / "report.md", html=out / "report.html", figures=figures)
    write_text(
        files.markdown,
        f"# {title}\n\nSources: {', '.join(map(str, paths))}\n\n{images}\n\n## Runs\n\n"
        + "\n\n".join(heading(t, tables, "### ", "") + markdown_table(t) for t in tables)
        + "\n",
    )
    imgs = "".join(f'<p><img src="{html.escape(f.name)}" alt="{f.stem}"></p>' for f in figures)
    write_text(
        files.html,
        f"<!doctype html><meta charset=utf-8><title>{title}</title><h1>{title}</h1>"
        f"{imgs}<h2>Runs</h2>" + "".join(heading(t, tables, "<h3>", "</h3>") + html_table(t) for t in tables) + "\n",
    )
    return files


def heading(table: Comparison, tables: list[Comparison], start: str, end: str) -> str:
    """A task's heading above its table, when the report holds runs of several tasks."""
    return f"{start}{html.escape(table.task or 'runs')} runs{end}\n\n" if len(tables) > 1 else ""


def add_train_at_best(comparison: Comparison, runs: list[Run]) -> None:
    """`train_at_best`: the training data loss at each run's best epoch (mean ± std per group)."""
    by_dir = {str(r.run_dir): r for r in runs}

    def value(run_dir: str) -> float | None:
        run = by_dir[run_dir]
        row = next((m for m in run.metrics if m.get("epoch") == run.summary.get("best_epoch")), None)
        return row.get("train_data_loss") if row else None

    for row in comparison.rows:
        values = [v for v in (value(d) for d in row.get("run_dirs", [row.get("run_dir")])) if v is not None]
        row["train_at_best"] = statistics.fmean(values) if values else None
        row["train_at_best_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
