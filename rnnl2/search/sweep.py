"""Sweeps: expand `--grid` axes × explicit override sets × seeds into runs, reconcile the
manifest `sweep.jsonl` (`manifest`) with the run folders, and pick the best configuration. The
value grammar is `grid`'s; running the runs is `launch/`'s; `compare` lends the metric directions.

    runs/<name>/sweep-<hash>/      sweep.json (the definition)  sweep.jsonl (one line per run)
        000-l2.lambda=0_seed=0/    an ordinary run folder (config.yaml, metrics.jsonl, summary.json)
        logs/000-….log             the child's stdout and stderr
        best.yaml, selection.json  written by --select
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import shlex
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..config import load_config, read_yaml, to_plain_dict
from ..errors import ConfigError, Rnnl2Error, Rnnl2Warning
from ..metrics import default_mode
from ..mlflow_tracking import log_parent_files
from ..run_state import FolderState, config_hash, folder_state
from ..runs import set_aside, write_json
from ..status import ManifestStatus
from .grid import MAX_RUNS, expand_values, format_value, parse_axis, parse_seeds, split_top_level
from .manifest import Manifest, PlannedRun, read_manifest, summary_metrics
from .selection import Candidate, write_selection


@dataclass
class SweepSpec:
    """What to run: one base config, overrides for every run, and what varies."""

    config: Path
    fixed: list[str] = field(default_factory=list)
    """`--set` overrides applied to every run, before the varying ones."""
    grid: list[tuple[str, list[Any]]] = field(default_factory=list)
    """Axes of the Cartesian product: (dotted key, values)."""
    variants: list[dict[str, Any]] = field(default_factory=list)
    """Explicit override sets (non-grid designs); each is crossed with the grid and seeds."""
    seeds: list[int] = field(default_factory=list)


# ------------------------------------------------------------------------ parsing


def read_sweep_file(path: Path) -> SweepSpec:
    """A sweep file: `config` (relative to the file), `set`, `grid`, `runs` (override sets), `seeds`."""
    raw = read_yaml(path)
    unknown = set(raw) - {"config", "set", "grid", "runs", "seeds"}
    if unknown or "config" not in raw:
        raise ConfigError(
            f"{path}: a sweep file has keys config (required), set, grid, runs, seeds"
            + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else "")
        )
    config = (path.parent / str(raw["config"])).resolve()
    if not config.is_file():
        raise ConfigError(f"{path}: config {raw['config']!r} not found ({config})")
    fixed = [f"{k}={format_value(v)}" for k, v in (raw.get("set") or {}).items()]
    grid = [
        (str(k), expand_values(v if isinstance(v, list) else split_top_level(str(v))))
        for k, v in (raw.get("grid") or {}).items()
    ]
    variants = [dict(item) for item in raw.get("runs") or []]
    return SweepSpec(config, fixed, grid, variants, [int(s) for s in raw.get("seeds") or []])


def build_spec(
    path: Path, grid: Sequence[str] = (), seeds: str | None = None, overrides: Sequence[str] = ()
) -> SweepSpec:
    """The sweep of the command line: a run config or a sweep file (with a `config:` key), plus
    `--grid` axes (replacing a file's axis of the same key), `--seeds` (replacing) and `--set`."""
    raw = read_yaml(path)
    spec = read_sweep_file(path) if isinstance(raw.get("config"), str) else SweepSpec(path)
    axes = dict(spec.grid)
    for text in grid:
        key, values = parse_axis(text)
        axes[key] = values
    spec.grid = list(axes.items())
    spec.seeds = parse_seeds(seeds) if seeds else spec.seeds
    spec.fixed = [*spec.fixed, *overrides]
    return spec


# ----------------------------------------------------------------------- planning


def slug(varying: dict[str, Any]) -> str:
    """A folder-safe name for a run's varying overrides: `l2.lambda=1.0e-05_seed=2`."""
    text = "_".join(f"{k}={format_value(v)}" for k, v in varying.items()) or "base"
    return re.sub(r"[^A-Za-z0-9._=+-]", "-", text)[:120]


def plan_sweep(spec: SweepSpec, runs_dir: Path, sweep_dir: Path | None = None) -> tuple[Path, list[PlannedRun]]:
    """Every run's overrides, validated config hash and folder; the folder name hashes them all."""
    keys = [key for key, _ in spec.grid]
    total = math.prod(len(v) for _, v in spec.grid) * max(len(spec.variants), 1) * max(len(spec.seeds), 1)
    if total > MAX_RUNS:
        raise ConfigError(f"the sweep plans {total:,} runs (grid × runs × seeds); at most {MAX_RUNS:,} are allowed")
    combos = [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in spec.grid))]
    seeds: list[int | None] = list(spec.seeds) or [None]
    planned: list[tuple[dict[str, Any], list[str], str, int]] = []
    for variant, combo, seed in itertools.product(spec.variants or [{}], combos, seeds):
        varying = {**variant, **combo, **({"seed": seed} if seed is not None else {})}
        overrides = spec.fixed + [f"{k}={format_value(v)}" for k, v in varying.items()]
        try:
            cfg = load_config(spec.config, overrides)
        except ConfigError as error:
            raise ConfigError(f"sweep run {slug(varying)}: {error}") from None
        planned.append((varying, overrides, config_hash(to_plain_dict(cfg)), cfg.train.epochs))
    if not planned:
        raise ConfigError("the sweep has no runs: a --grid axis has no values")
    base_name = load_config(spec.config, spec.fixed).name
    digest = hashlib.sha256(" ".join(h for _, _, h, _ in planned).encode()).hexdigest()[:8]
    sweep_dir = sweep_dir or runs_dir / base_name / f"sweep-{digest}"
    runs = [
        PlannedRun(
            index=i,
            name=f"{i:03d}-{slug(v)}",
            varying=v,
            overrides=o,
            config_hash=h,
            run_dir=sweep_dir / f"{i:03d}-{slug(v)}",
            epochs=epochs,
        )
        for i, (v, o, h, epochs) in enumerate(planned)
    ]
    return sweep_dir, runs


def train_command(
    spec: SweepSpec,
    run: PlannedRun,
    program: Sequence[str] = ("rnnl2",),
    resume: bool = False,
    pause_after: int | None = None,
) -> list[str]:
    """The `rnnl2 train` argv of one run (the CLI's --quiet keeps stdout to the run folder);
    with `resume`, continue the run's folder from its checkpoints/last.pt instead; with
    `pause_after`, stop after that epoch (a `tune` rung)."""
    pause = ["--pause-after", str(pause_after)] if pause_after is not None else []
    if resume:
        changes = [arg for item in run.resume_sets for arg in ("--set", item)]
        force = ["--force", *changes] if changes else []
        return [*program, "train", "--resume", str(run.run_dir), *force, *pause, "--quiet"]
    argv = [*program, "train", str(spec.config)]
    for item in run.overrides:
        argv += ["--set", item]
    return argv + ["--run-dir", str(run.run_dir), *pause, "--quiet"]


def dry_run_lines(spec: SweepSpec, runs: list[PlannedRun]) -> list[str]:
    """One shell-quoted `rnnl2 train` line per run."""
    return [shlex.join(train_command(spec, run)) for run in runs]


# ------------------------------------------------------------------- reconciling


def reconcile(manifest: Manifest, runs: list[PlannedRun]) -> tuple[list[PlannedRun], list[tuple[PlannedRun, bool]]]:
    """Read every run's state from its folder (`folder_state`) and bring the manifest in line;
    returns the runs already done and the runs to start, each with whether it resumes from its
    last checkpoint. A failed attempt is moved aside to `<run>.failed-N/` with its log, and the
    run starts again."""
    done, todo = [], []
    for run in runs:
        record = manifest.record(run.name)
        code = record.get("exit_code") if record.get("status") == ManifestStatus.FAILED else None
        reading = folder_state(run.run_dir, run.accepted_hashes, code)
        state, summary = reading.state, reading.summary
        if state == FolderState.DONE:
            if record.get("status") != ManifestStatus.DONE or not record.get("metrics"):
                manifest.update(
                    run.name, status=ManifestStatus.DONE, exit_code=0, error=None, metrics=summary_metrics(summary)
                )
            done.append(run)
            continue
        if state in (FolderState.FAILED, FolderState.DIVERGED):
            moved = set_aside(run.run_dir)
            warnings.warn(
                f"{run.name}: its earlier attempt did not finish; kept it in {moved.name} and starting the run again",
                Rnnl2Warning,
                stacklevel=2,
            )
        resume = state == FolderState.RESUME
        todo.append((run, resume))
        manifest.update(run.name, status=ManifestStatus.PENDING, exit_code=None, error=None, resume=resume)
    return done, todo


def mirror_done_runs(spec: SweepSpec, done: list[PlannedRun]) -> int:
    """Runs that finished before tracking was asked for (`output.mlflow`/`output.tensorboard`
    turned on for a finished sweep: the same hash, so nothing retrains) are logged now from
    their folders; returns how many were."""
    from ..tracking import mirror_finished

    count = 0
    for run in done:
        count += mirror_finished(run.run_dir, load_config(spec.config, run.overrides))
    return count


def write_definition(sweep_dir: Path, spec: SweepSpec, runs: list[PlannedRun]) -> None:
    """`sweep.json`: what the sweep runs, for people and for `compare`."""
    write_json(
        sweep_dir / "sweep.json",
        {
            "config": str(spec.config),
            "set": spec.fixed,
            "grid": [[k, v] for k, v in spec.grid],
            "runs": spec.variants,
            "seeds": spec.seeds,
            "count": len(runs),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )


# ---------------------------------------------------------------------- selection


def metric_value(metrics: dict[str, Any], name: str) -> float | None:
    """A metric from a run's summary: best-checkpoint val_*/test_*, else the last epoch's `final`."""
    value = metrics.get(name, (metrics.get("final") or {}).get(name))
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def parse_select(select: str | None) -> tuple[str | None, str | None]:
    """`--select METRIC[:min|max]` → (metric, mode); no option → (None, None)."""
    if not select:
        return None, None
    metric, _, mode = select.partition(":")
    if not metric or mode not in ("", "min", "max"):
        raise ConfigError(f"--select {select!r}: write METRIC, METRIC:min or METRIC:max")
    return metric, mode or None


def select_best(sweep_dir: Path, metric: str, mode: str | None = None) -> dict[str, Any]:
    """Average `metric` over seeds per configuration, pick the best, and write best.yaml (the
    winner's resolved config) and selection.json. The winner's test metrics are the ones its
    summary.json holds (the best checkpoint, evaluated on the run's own device when it ended)."""
    mode = mode or default_mode(metric)
    candidates = []
    for record in read_manifest(sweep_dir):
        value = metric_value(record.get("metrics") or {}, metric)
        if record["status"] == ManifestStatus.DONE and value is not None:
            settings = {k: v for k, v in record["overrides"].items() if k != "seed"}
            candidates.append(
                Candidate(settings=settings, value=value, run_dir=Path(record["run_dir"]), metrics=record["metrics"])
            )
    selection = write_selection(sweep_dir, candidates, metric, mode)
    if selection is None:
        raise Rnnl2Error(f"--select {metric}: no finished run in {sweep_dir} logs {metric!r}")
    return selection


@dataclass
class SweepOutcome:
    """What a finished (or stopped) sweep shows: its table, its selection, the runs that failed."""

    sweep_dir: Path
    runs: int
    skipped: int
    failed: list[str]
    interrupted: bool
    selection: dict[str, Any] | None
    comparison: Any  # compare.Comparison, or None when no run finished

    def to_json(self) -> dict[str, Any]:
        return {
            "sweep_dir": str(self.sweep_dir),
            "runs": self.runs,
            "skipped": self.skipped,
            "failed": self.failed,
            "interrupted": self.interrupted,
            "selection": self.selection,
            "table": self.comparison.to_json() if self.comparison is not None else None,
        }


def sweep_outcome(sweep_dir: Path, spec: SweepSpec, result: Any, metric: str | None, mode: str | None) -> SweepOutcome:
    """The table of the finished runs (grouped by seed when there are several), and the selection
    by `metric` when one was asked for, every run ended and the sweep was not interrupted."""
    from ..compare import compare_runs

    done = any(r["status"] == "done" for r in result.records)
    selection = select_best(sweep_dir, metric, mode) if metric and done and not result.interrupted else None
    comparison = compare_runs([sweep_dir], by_seed=len(spec.seeds) > 1) if done else None
    if selection is not None:
        log_parent_files(sweep_dir)  # best.yaml and selection.json on the sweep's MLflow run
    return SweepOutcome(
        sweep_dir,
        len(result.records),
        result.skipped,
        [r["name"] for r in result.failed],
        result.interrupted,
        selection,
        comparison,
    )
