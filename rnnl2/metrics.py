"""Metric names and which way is better: the one torch-free source that evaluate (what it logs),
the config (which early-stopping metric a data kind allows), compare and sweep (sort order) share."""

from __future__ import annotations

from typing import Literal

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
