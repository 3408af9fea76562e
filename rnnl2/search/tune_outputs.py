"""What a tune folder shows: trials.json (also the tuner's memory) and trials.csv, best.yaml and
selection.json as `sweep --select` writes them, and one figure per rung of the metric against
λ (or the first searched key). Reads and writes JSON, CSV and PNG; never torch."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ..errors import Rnnl2Error
from ..runs import read_json, read_summary, write_json, write_text
from ..status import TrialState
from .grid import format_value
from .halving import STATES, Trial
from .pbt import schedule_text
from .selection import Candidate, write_selection
from .space import Space

TRIALS_FILE = "trials.json"


def load_trials(tune_dir: Path) -> list[Trial]:
    """The trials a tune folder holds (none for a new folder)."""
    path = tune_dir / TRIALS_FILE
    if not path.is_file():
        return []
    raw = read_json(path)
    try:
        trials = [Trial.from_json(item) for item in raw["trials"]]
    except (KeyError, TypeError, ValueError) as error:
        raise Rnnl2Error(f"{path}: not a tune's trials file ({type(error).__name__}: {error})") from None
    if [t.number for t in trials] != list(range(len(trials))) or any(t.state not in STATES for t in trials):
        raise Rnnl2Error(f"{path}: the trials are damaged (numbers out of order or an unknown state)")
    return trials


def write_trials(tune_dir: Path, plan_info: dict[str, Any], trials: list[Trial], keys: list[str]) -> None:
    """trials.json (every field, for the tuner and for scripts) and trials.csv (one row per trial:
    its parameters, the metric at every rung, its final val/test metrics)."""
    rows = [{**t.to_json(), "run_dir": str(tune_dir / t.name)} for t in trials]
    write_json(tune_dir / TRIALS_FILE, {**plan_info, "trials": rows})
    rungs, metric = plan_info["rungs"], plan_info["metric"]
    finals = sorted({k for t in trials for k in t.metrics if k.startswith(("val_", "test_"))})
    schedules = [f"{k} schedule" for k in keys] if any(len(t.lineage) > 1 for t in trials) else []
    columns = ["trial", "state", "bracket", *keys, *schedules, *(f"{metric}@{r}" for r in rungs), "epochs"]
    columns += [*finals, "run_dir"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for t in trials:
        row = {"trial": t.number, "state": t.state, "bracket": t.bracket, "epochs": t.epochs}
        row |= {k: cell(t.params.get(k)) for k in keys}
        row |= {f"{k} schedule": schedule_text(t, k) for k in keys} if schedules else {}
        row |= {f"{metric}@{r}": t.values.get(r) for r in rungs} | {k: t.metrics.get(k) for k in finals}
        writer.writerow({**row, "run_dir": str(tune_dir / t.name)})
    write_text(tune_dir / "trials.csv", buffer.getvalue())


def cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def select_best(tune_dir: Path, trials: list[Trial], metric: str, mode: str) -> dict[str, Any] | None:
    """The best completed trial by `metric`: best.yaml (its resolved config) and selection.json,
    in `sweep --select`'s format (each trial on its own, even two with the same values: n 1, std 0)."""
    candidates = [
        Candidate(
            settings=t.params,
            value=value,
            run_dir=tune_dir / t.name,
            metrics=t.metrics,
            extra={"trial": t.number, **trained_by(t, tune_dir / t.name)},
            group=t.name,
        )
        for t in trials
        if t.state == TrialState.COMPLETED and (value := t.latest_value()) is not None
    ]
    return write_selection(tune_dir, candidates, metric, mode)


def trained_by(trial: Trial, run_dir: Path) -> dict[str, Any]:
    """pbt: what trained the chosen weights. The metrics are those of the member's best epoch,
    whose weights may come from an ancestor with other values (its lineage); best.yaml and
    `overrides` hold the member's last values. Empty for a trial without copies."""
    best = (read_summary(run_dir) or {}).get("best_epoch")
    if len(trial.lineage) < 2 or not isinstance(best, int):
        return {}
    trained = [entry for entry in trial.lineage if entry["epoch"] < best]
    return {"best_epoch": best, "params_at_best_epoch": trained[-1]["params"], "lineage_to_best_epoch": trained}


def plotted_space(spaces: list[Space]) -> Space:
    """λ when it is searched, else the first space."""
    return next((s for s in spaces if s.key == "l2.lambda"), spaces[0])


def write_figures(
    tune_dir: Path, trials: list[Trial], spaces: list[Space], rungs: list[int], metric: str
) -> list[Path]:
    """figures/rung-<epochs>.png: the metric at that rung against the plotted key, one point per
    trial, marked by whether it went on; λ = 0 sits on the linear stretch of a symlog axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    space = plotted_space(spaces)
    numeric = all(isinstance(t.params.get(space.key), (int, float)) for t in trials)
    labels = sorted({format_value(t.params.get(space.key)) for t in trials})
    written = []
    for k, epoch in enumerate(rungs):
        points = [t for t in trials if isinstance(t.values.get(epoch), (int, float))]
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        groups = {
            "went on": [t for t in points if t.rung > k],
            "stopped here": [t for t in points if t.rung == k and t.state == "stopped"],
            "completed here": [t for t in points if t.rung == k and t.state == "completed"],
            "other": [t for t in points if t.rung == k and t.state not in ("stopped", "completed")],
        }
        for (name, members), marker in zip(groups.items(), "o^s x"):
            if not members:
                continue
            xs = [
                t.params[space.key] if numeric else labels.index(format_value(t.params.get(space.key))) for t in members
            ]
            ys = [float(t.values[epoch] or 0.0) for t in members]  # `points`: each has a number there
            ax.scatter(xs, ys, marker=marker, label=name, alpha=0.8)
        if numeric and space.kind == "loguniform":
            ax.set_xscale("symlog", linthresh=space.low)
        if not numeric:
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_xlabel(space.key + (" (symlog: 0 on the linear stretch)" if space.kind == "loguniform" else ""))
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} at epoch {epoch} (rung {k}): {len(points)} trials")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        folder = tune_dir / "figures"
        folder.mkdir(exist_ok=True)
        fig.savefig(folder / f"rung-{epoch}.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(folder / f"rung-{epoch}.png")
    return written
