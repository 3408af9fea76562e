"""How runs look in the report's figures: one colour per λ on a log scale, pruned tune trials
faded and failed runs marked, and the naive baseline as a line or, far off the curves, a label."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from .compare import Run

LAMBDA = "l2.lambda"


def colours(groups: list, keys: list[str]) -> list:
    """When λ varies: one colour map over log λ (viridis, dark = small λ; λ = 0 black), so each λ
    has its own colour and equal λ the same one; else the default cycle."""
    import matplotlib

    lambdas = [values.get(LAMBDA) for values, _ in groups]
    positive = [math.log10(v) for v in lambdas if isinstance(v, (int, float)) and v > 0]
    if LAMBDA in keys and positive:
        cmap, low, high = matplotlib.colormaps["viridis"], min(positive), max(positive)

        def colour(value: Any) -> Any:
            if not isinstance(value, (int, float)) or value <= 0:
                return "black"
            return cmap(0.1 + 0.8 * ((math.log10(value) - low) / (high - low) if high > low else 0.5))

        return [colour(v) for v in lambdas]
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return [cycle[i % len(cycle)] for i in range(len(groups))]


TRIAL_STATES: dict[Path, dict[str, str]] = {}


def outcome(run: Run) -> str:
    """`pruned` for a tune trial stopped at its rung (its folder stays paused there), `failed` for
    a run that diverged or crashed (or a failed trial), else `ok`."""
    tune_dir = run.run_dir.parent
    if tune_dir not in TRIAL_STATES:
        try:
            trials = json.loads((tune_dir / "trials.json").read_text())["trials"]
            TRIAL_STATES[tune_dir] = {t["name"]: t["state"] for t in trials}
        except (OSError, ValueError, KeyError, TypeError):
            TRIAL_STATES[tune_dir] = {}
    state = TRIAL_STATES[tune_dir].get(run.run_dir.name)
    if state == "stopped":
        return "pruned"
    if state == "failed" or run.summary.get("status") in ("diverged", "failed"):
        return "failed"
    return "ok"


def group_style(members: list[Run]) -> tuple[str, dict[str, Any]]:
    """A legend suffix and line style: a pruned trial faded and dotted, a failed run marked ×."""
    ends = {outcome(r) for r in members}
    if ends == {"pruned"}:
        return " (pruned)", {"alpha": 0.35, "linestyle": ":", "marker": "o", "mfc": "none"}
    if "failed" in ends:
        return " (failed)", {"marker": "x", "markersize": 6}
    return "", {"marker": "o"}


def baseline_level(runs: list[Run], metric: str) -> tuple[str, float] | None:
    """(name, value) of the runs' naive baseline on `metric` (`val_loss`), the mean over the runs
    that have one; None when none has."""
    found = []
    for run in runs:
        name = run.summary.get("baseline")
        value = (run.summary.get("baselines") or {}).get(name, {}).get(metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            found.append((name, value))
    if not found:
        return None
    return str(found[0][0]), statistics.fmean(v for _, v in found)


def draw_baseline(axes, runs: list[Run], metric: str) -> None:
    """The naive baseline's `metric` as a dashed grey line across each of `axes` when it lies
    near the curves; far from them (where a line would squeeze the curves flat), a labelled
    arrow at the axes' edge says where it is, and the scale stays the curves'."""
    level = baseline_level(runs, metric)
    if level is None:
        return
    name, value = level
    for index, ax in enumerate(axes):
        low, high = ax.get_ylim()
        margin = 0.25 * (high - low)
        if low - margin <= value <= high + margin:
            label = f"naive {name} ({value:.4g})" if index == len(axes) - 1 else None
            ax.axhline(value, color="grey", linestyle="--", linewidth=1.2, label=label)
            continue
        if index != len(axes) - 1:
            continue
        above = value > high
        ax.annotate(
            f"{'↑' if above else '↓'} naive {name}: {value:.4g} (off the scale)",
            xy=(0.98, 0.97 if above else 0.03),
            xycoords="axes fraction",
            ha="right",
            va="top" if above else "bottom",
            color="grey",
            fontsize=8,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1.5},
            zorder=5,
        )
        room = 0.07 * (high - low)  # a strip for the note, so it never sits on a marker at the edge
        ax.set_ylim(low, high + room) if above else ax.set_ylim(low - room, high)
