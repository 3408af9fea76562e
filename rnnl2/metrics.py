"""Metric names and which way is better: the one torch-free source that evaluate (what it logs),
the config (which early-stopping metric a data kind allows), compare and sweep (sort order) share."""

from __future__ import annotations

import math
from typing import Any, Literal

Mode = Literal["min", "max"]

# Metric names per task, without the split prefix (`val_loss`, `test_accuracy`, ...).
METRICS: dict[str, tuple[str, ...]] = {
    "tagging": ("loss", "accuracy"),
    "classification": ("loss", "accuracy", "macro_f1"),
    "regression": ("loss", "mse", "mae", "rmse"),
    "lm": ("loss", "perplexity", "bpc"),
}
HIGHER_IS_BETTER = frozenset({"accuracy", "macro_f1"})
"""Metrics where larger wins; every other one (losses, errors, perplexity) is better lower."""

TASK_OF_KIND: dict[str, str] = {
    "seed_tagging": "tagging",
    "sine": "regression",
    "adding": "regression",
    "timeseries_forecast": "regression",
    "sequence_classification": "classification",
    "text_lm": "lm",
    "text_classification": "classification",
}
"""The task each `data.kind` builds (its `DataSpec.task`), so a config can be checked before any
data is read."""


def default_mode(metric: str) -> Mode:
    """`max` for accuracy and macro-F1 (with any prefix: `val_`, `test_`), `min` for the rest."""
    return "max" if metric.endswith(tuple(HIGHER_IS_BETTER)) else "min"


def validation_metrics(kind: str) -> list[str]:
    """The `val_*` metrics a run of this data kind logs every epoch (early-stopping candidates)."""
    return [f"val_{name}" for name in METRICS[TASK_OF_KIND[kind]]]


def reference_baseline(baselines: dict[str, dict[str, float]], split: str) -> str | None:
    """The naive baseline a run must beat: the one with the lowest `<split>_loss` (val for a run,
    so the test split plays no part in the choice); None when there is none."""
    scored = [(metrics.get(f"{split}_loss", math.inf), name) for name, metrics in baselines.items()]
    return min(scored)[1] if scored else None


def versus_baseline(result: dict[str, Any], metric: str | None = None) -> dict[str, Any] | None:
    """How `metric` of a summary (default: the test twin of its early-stopping metric) compares with
    its reference baseline: `change` is the relative improvement over the baseline (positive: the
    model is better), `beats` whether it is better at all. None without a baseline or the metric."""
    name = result.get("baseline")
    baselines = result.get("baselines") or {}
    if metric is None:
        best = result.get("best_metric")
        metric = "test_" + best.removeprefix("val_") if isinstance(best, str) else "test_loss"
    model, base = result.get(metric), (baselines.get(name) or {}).get(metric)
    if not (isinstance(model, (int, float)) and isinstance(base, (int, float))):
        return None
    if not (math.isfinite(model) and math.isfinite(base)):
        return None
    sign = 1 if default_mode(metric) == "min" else -1
    change = sign * (base - model) / abs(base) if base else 0.0
    return {
        "metric": metric,
        "baseline": name,
        "model": model,
        "baseline_value": base,
        "change": change,
        "beats": sign * (base - model) > 0,
    }
