"""Compare runs: collect run folders (run dirs, sweep dirs, globs) and build one row per run with
the config keys that differ, its best and test metrics, how it fares against its naive baseline,
train–val gap, final weight norm, epochs and wall time; any number in summary.json as a column;
sort; group seeds into mean ± std; one table per task. Reads JSON and YAML only, never torch."""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .config import read_yaml
from .errors import Rnnl2Error
from .metrics import TASK_OF_KIND, default_mode, versus_baseline
from .runs import FAILED_ATTEMPT, read_json, read_jsonl, read_metrics

STATS = ("best_epoch", "gap", "weight_norm", "epochs", "wall_s")
"""Numeric columns after the metrics; averaged over seeds like them."""
VS_BASELINE = "vs_baseline"
"""The relative improvement of the test metric over the run's naive baseline (+: the model is better)."""


def short_number(value: float) -> str:
    """0 → `0`, 0.0001 → `1e-4`, 0.000316 → `3.16e-4`: λ (and every config number) reads alike in
    every table, legend and line."""
    if value == 0 or 0.1 <= abs(value) < 1000:
        return f"{value:g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def format_setting(value: Any) -> str:
    """A config value as a table shows it: floats by `short_number`, the rest as text."""
    if isinstance(value, float):
        return short_number(value)
    return "—" if value is None else str(value)


@dataclass
class Run:
    run_dir: Path
    config: dict[str, Any]
    """The resolved config, flattened to dotted keys (`l2.lambda`)."""
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]


@dataclass
class Comparison:
    keys: list[str]
    """Config keys that differ between the runs (without `seed` when grouped by seed)."""
    columns: list[str]
    rows: list[dict[str, Any]]
    sort: str
    mode: str
    by_seed: bool
    numeric: list[str] = field(default_factory=list)
    """Columns that hold numbers (grouped rows also carry `<column>_std`)."""
    task: str | None = None
    """The task of every run in the table (tagging, classification, regression, lm)."""

    def shown_columns(self) -> list[str]:
        """The columns a person reads: no paths, std folded into `mean ± std`."""
        return [c for c in self.columns if c not in ("run_dir", "run_dirs", "seeds") and not c.endswith("_std")]

    def fitting_columns(self, width: int) -> tuple[list[str], list[str]]:
        """(the columns that fit in `width` terminal columns, the ones left out). The varying
        keys, the sort metric, the first test metric and vs_baseline come first, whatever the
        width; the rest follow in order while they fit."""
        shown = self.shown_columns()
        tests = [c for c in shown if c.startswith("test_")][:1]
        first = [c for c in shown if c in self.keys or c in (self.sort, *tests, VS_BASELINE)]
        first = (["run"] if "run" in shown and not self.keys else []) + first
        cost = {c: 3 + max([len(c)] + [len(self.cell(r, c)) for r in self.rows]) for c in shown}
        used = 1 + sum(cost[c] for c in first)
        kept = set(first)
        for column in shown:
            if column not in kept and used + cost[column] <= width:
                kept.add(column)
                used += cost[column]
        return [c for c in shown if c in kept], [c for c in shown if c not in kept]

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table of every shown column (pipes in cells escaped)."""
        columns = self.shown_columns()
        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        for row in self.rows:
            lines.append("| " + " | ".join(self.cell(row, c).replace("|", "\\|") for c in columns) + " |")
        return "\n".join(lines) + "\n"

    def cell(self, row: dict[str, Any], column: str) -> str:
        value = row.get(column)
        if column in self.keys:
            return format_setting(value)
        if column == VS_BASELINE and isinstance(value, float):
            std = row.get(f"{column}_std") if self.by_seed and row.get("n", 1) > 1 else None
            return f"{value:+.1%}" + (f" ± {std:.1%}" if isinstance(std, float) else "")
        if isinstance(value, float):
            std = row.get(f"{column}_std") if self.by_seed else None
            return f"{value:.4g} ± {std:.2g}" if isinstance(std, float) and row.get("n", 1) > 1 else f"{value:.4g}"
        return "—" if value is None else str(value)

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "keys": self.keys,
            "columns": self.columns,
            "sort": self.sort,
            "mode": self.mode,
            "by_seed": self.by_seed,
            "rows": self.rows,
        }

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})
        return buffer.getvalue()


def tables_to_json(tables: list[Comparison]) -> dict[str, Any]:
    """One table as its own object (with its `task`); several as {"tables": [...]}."""
    return tables[0].to_json() if len(tables) == 1 else {"tables": [t.to_json() for t in tables]}


def tables_to_csv(tables: list[Comparison]) -> str:
    """One table as it is; several as one CSV whose first column names each row's task."""
    if len(tables) == 1:
        return tables[0].to_csv()
    columns = ["task", *dict.fromkeys(c for t in tables for c in t.columns)]
    merged = Comparison([], columns, [{"task": t.task, **row} for t in tables for row in t.rows], "", "min", False)
    return merged.to_csv()


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (
        (path / "summary.json").is_file() or (path / "metrics.jsonl").is_file()
    )


def find_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders named directly, listed by a sweep's manifest, matched by a glob, or found below
    a folder; never an attempt a sweep set aside (`<run>.failed-N/`) unless named directly."""
    found: list[Path] = []
    for item in paths:
        matches = [Path(p) for p in sorted(glob.glob(str(item)))] if glob.has_magic(str(item)) else [Path(item)]
        for path in matches:
            if is_run_dir(path):
                found.append(path)
            elif (path / "sweep.jsonl").is_file():
                found += manifest_run_dirs(path)
                found += run_dirs_below(path)  # the folders are the truth: a torn manifest loses none
            elif path.is_dir():
                found += run_dirs_below(path)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise Rnnl2Error(
            f"no run folders (config.yaml with summary.json or metrics.jsonl) in {', '.join(map(str, paths))}"
        )
    return unique


def manifest_run_dirs(sweep_dir: Path) -> list[Path]:
    """The run folders a sweep's `sweep.jsonl` lists: the recorded folder, else the one beside the
    manifest (a moved sweep). A torn last line is skipped with a warning."""
    found = []
    for record in read_jsonl(sweep_dir / "sweep.jsonl"):
        recorded = record.get("run_dir") if isinstance(record.get("run_dir"), str) else None
        name = record.get("name") if isinstance(record.get("name"), str) else Path(recorded or "").name
        candidates = ([Path(recorded)] if recorded else []) + ([sweep_dir / name] if name else [])
        found += [c for c in candidates if is_run_dir(c)][:1]
    return found


def run_dirs_below(folder: Path) -> list[Path]:
    """Every run folder below `folder`, without the attempts a sweep set aside."""
    return sorted(
        p.parent
        for p in folder.rglob("config.yaml")
        if is_run_dir(p.parent) and not any(FAILED_ATTEMPT.search(part) for part in p.parent.relative_to(folder).parts)
    )


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"l2": {"lambda": 0}} → {"l2.lambda": 0}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_run(run_dir: Path) -> Run:
    """Config, summary (or `running` when it has none yet) and metrics of one run folder. A torn
    last line of metrics.jsonl is skipped with a warning; a damaged file is an error naming it."""
    config = read_yaml(run_dir / "config.yaml")
    summary_path = run_dir / "summary.json"
    summary = read_json(summary_path) if summary_path.is_file() else {"status": "running"}
    return Run(run_dir, flatten(config), summary, read_metrics(run_dir))


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    return [load_run(p) for p in find_run_dirs(paths)]


def differing_keys(runs: list[Run]) -> list[str]:
    """Config keys whose value is not the same in every run, in config order."""
    keys = list(dict.fromkeys(k for run in runs for k in run.config))
    return [k for k in keys if len({json.dumps(run.config.get(k), sort_keys=True) for run in runs}) > 1]


def metric_columns(runs: list[Run]) -> list[str]:
    """The early-stopping metric, val_loss and val_accuracy where logged, each with its test twin."""
    names = [r.summary["best_metric"] for r in runs if isinstance(r.summary.get("best_metric"), str)]
    names = [n for n in names if n.startswith("val_")] + ["val_loss", "val_accuracy"]
    present = {k for r in runs for k in r.summary} | {k for r in runs for row in r.metrics[:1] for k in row}
    columns: list[str] = []
    for name in dict.fromkeys(names):
        if name in present:
            columns += [name] + ([f"test_{name[4:]}"] if f"test_{name[4:]}" in present else [])
    return columns


def summary_numbers(summary: dict[str, Any]) -> dict[str, float]:
    """Every number in a summary.json by its dotted key: `test_mae`, `baselines.repeat_last.test_mse`."""
    return {key: value for key, value in flatten(summary).items() if number(value) is not None}


def run_task(run: Run) -> str:
    """The task of a run's data kind (regression, classification, ...), or the kind itself."""
    kind = run.config.get("data.kind")
    return TASK_OF_KIND.get(str(kind), str(kind))


def run_row(run: Run, keys: list[str], metrics: list[str]) -> dict[str, Any]:
    s = run.summary
    best = next((r for r in run.metrics if r.get("epoch") == s.get("best_epoch")), None)
    numbers = summary_numbers(s)
    vs = versus_baseline(s)
    row: dict[str, Any] = {"run": run.run_dir.name, **{k: run.config.get(k) for k in keys}, "status": s.get("status")}
    for name in metrics:  # best-checkpoint values from summary.json, else that epoch's row
        if name == VS_BASELINE:
            row[name] = vs["change"] if vs else None
        else:
            row[name] = numbers.get(name, best.get(name) if best and name.startswith("val_") else None)
    row["best_epoch"] = s.get("best_epoch")
    val, train = (number(best.get("val_loss")), number(best.get("train_data_loss"))) if best else (None, None)
    row["gap"] = val - train if val is not None and train is not None else None
    row["weight_norm"] = run.metrics[-1].get("weight_norm") if run.metrics else None
    row["epochs"] = s.get("epochs_run", len(run.metrics))
    row["wall_s"] = s.get("wall_seconds")
    row["run_dir"] = str(run.run_dir)
    return row


def number(value: Any) -> float | None:
    """A finite float, or None for missing, NaN, booleans and text."""
    return (
        float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else None
    )


def group_by_seed(rows: list[dict[str, Any]], keys: list[str], numeric: list[str]) -> list[dict[str, Any]]:
    """One row per configuration: mean and sample std over its seeds, and n."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(json.dumps([row.get(k) for k in keys]), []).append(row)
    out = []
    for members in groups.values():
        row = {k: members[0].get(k) for k in keys}
        row["n"] = len(members)
        row["status"] = ",".join(sorted({str(m.get("status")) for m in members}))
        for column in numeric:
            values = [v for v in (number(m.get(column)) for m in members) if v is not None]
            row[column] = statistics.fmean(values) if values else None
            row[f"{column}_std"] = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
        row["seeds"] = [m.get("seed") for m in members]
        row["run_dirs"] = [m["run_dir"] for m in members]
        out.append(row)
    return out


def available_columns(runs: list[Run]) -> list[str]:
    """Every column a table of these runs can show or sort by: the per-epoch `val_*` metrics, the
    naive-baseline comparison, the stats, and every number in their summary.json files."""
    logged = [k for r in runs for row in r.metrics[:1] for k in row if k.startswith("val_")]
    baseline = [VS_BASELINE] if any(r.summary.get("baselines") for r in runs) else []
    found = [k for r in runs for k in summary_numbers(r.summary)]
    return list(dict.fromkeys(logged + baseline + list(STATS) + found))


def choose_metrics(runs: list[Run], columns: Sequence[str] | None, sort: str | None) -> list[str]:
    """The metric columns: `columns` as given (each checked), else the default ones and vs_baseline;
    a `sort` key that is a number of the runs but not yet a column is added."""
    available = available_columns(runs)
    if columns:
        unknown = [c for c in columns if c not in available]
        if unknown:
            raise Rnnl2Error(
                f"--columns {', '.join(unknown)}: not a column of these runs; choose from {', '.join(available)}"
            )
        metrics = [c for c in columns if c not in STATS]
    else:
        metrics = metric_columns(runs) + ([VS_BASELINE] if VS_BASELINE in available else [])
    if sort and sort not in metrics and sort not in STATS and sort in available:
        metrics.append(sort)
    return metrics


def compare_runs(
    paths: Sequence[str | Path],
    sort: str | None = None,
    by_seed: bool | None = None,
    runs: list[Run] | None = None,
    columns: Sequence[str] | None = None,
) -> Comparison:
    """The comparison table of the runs under `paths`; `by_seed=None` groups when only seeds differ.
    `columns` picks the numeric columns (any number in summary.json; default: the metrics)."""
    runs = runs if runs is not None else load_runs(paths)
    keys = differing_keys(runs)
    metrics = choose_metrics(runs, columns, sort)
    rows = [run_row(run, keys + ["seed"] * ("seed" not in keys), metrics) for run in runs]
    if by_seed is None:
        by_seed = keys == ["seed"]
    stats = [c for c in STATS if c in columns] if columns else list(STATS)
    numeric = metrics + stats
    sort = sort or (metrics[0] if metrics else "wall_s")
    if by_seed:
        keys = [k for k in keys if k != "seed"]
        rows = group_by_seed(rows, keys, numeric)
        columns_out = (
            keys + ["n", "status"] + [c for name in numeric for c in (name, f"{name}_std")] + ["seeds", "run_dirs"]
        )
    else:
        columns_out = ["run"] + keys + ["status"] + numeric + ["run_dir"]
    if sort not in columns_out:
        choices = [c for c in columns_out if not c.endswith("_std")] + available_columns(runs)
        raise Rnnl2Error(f"--sort {sort!r}: not a column; choose one of {', '.join(dict.fromkeys(choices))}")
    mode = "max" if sort == VS_BASELINE else default_mode(sort)
    sign = 1 if mode == "min" else -1

    def sort_key(row: dict[str, Any]) -> tuple:  # numbers by value, then text, missing values last
        value = number(row.get(sort))
        return (row.get(sort) is None, value is None, sign * value if value is not None else 0.0, str(row.get(sort)))

    rows.sort(key=sort_key)
    tasks = {run_task(run) for run in runs}
    return Comparison(keys, columns_out, rows, sort, mode, by_seed, numeric, tasks.pop() if len(tasks) == 1 else None)


def compare_by_task(
    paths: Sequence[str | Path],
    sort: str | None = None,
    by_seed: bool | None = None,
    runs: list[Run] | None = None,
    columns: Sequence[str] | None = None,
) -> list[Comparison]:
    """One comparison per task among the runs (a loss means different things in each). A `sort`
    or `columns` that only some tasks have applies where it can; it is an error if none has it."""
    runs = runs if runs is not None else load_runs(paths)
    by_task: dict[str, list[Run]] = {}
    for run in runs:
        by_task.setdefault(run_task(run), []).append(run)
    if len(by_task) == 1:
        return [compare_runs(paths, sort, by_seed, runs, columns)]
    tables, errors = [], []
    for members in by_task.values():
        try:
            tables.append(compare_runs(paths, sort, by_seed, members, columns))
        except Rnnl2Error as error:
            errors.append(error)
            wanted = [c for c in columns or [] if c in available_columns(members)]
            chosen = sort if sort in available_columns(members) else None
            tables.append(compare_runs(paths, chosen, by_seed, members, wanted or None))
    if len(errors) == len(by_task):
        raise errors[0]
    return tables
