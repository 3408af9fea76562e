"""The one writer of best.yaml and selection.json, for `sweep --select` and for `tune`: candidates
grouped by their settings (seeds averaged), the best mean wins, and its best member's resolved
config becomes best.yaml. Reads and writes JSON and YAML; never torch."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runs import write_json, write_text


@dataclass(kw_only=True)
class Candidate:
    """One finished run that can be chosen."""

    settings: dict[str, Any]
    """What it searched (sweep: its overrides without the seed; tune: the trial's values)."""
    value: float
    """Its selection metric."""
    run_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    """Its best checkpoint's val_*/test_* metrics."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Entries selection.json carries when this candidate wins (a tune's `trial` number)."""
    group: str | None = None
    """What it is averaged with: the runs of one group are seeds of one configuration. None: its
    settings (a sweep). A tune gives each trial its own, since two trials with the same values
    may differ (a pbt member's past, a late fork against its refit)."""


def write_selection(folder: Path, candidates: list[Candidate], metric: str, mode: str) -> dict[str, Any] | None:
    """Pick the settings with the best mean `metric` (ties: the one seen first), write best.yaml
    and selection.json into `folder`, and return the selection; None when there is no candidate."""
    if not candidates:
        return None
    sign = 1 if mode == "min" else -1
    groups: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        groups.setdefault(candidate.group or json.dumps(candidate.settings, sort_keys=True), []).append(candidate)
    means = {key: statistics.fmean(c.value for c in members) for key, members in groups.items()}
    order = list(groups)
    ranked = sorted(groups, key=lambda key: (sign * means[key], order.index(key)))
    winner = ranked[0]
    members = sorted(groups[winner], key=lambda c: sign * c.value)
    best = members[0]
    write_text(folder / "best.yaml", (best.run_dir / "config.yaml").read_text(encoding="utf-8"))
    values = [c.value for c in members]
    selection = {
        "metric": metric,
        "mode": mode,
        "overrides": best.settings,
        "mean": means[winner],
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
        **best.extra,
        "run_dir": str(best.run_dir),
        "run_dirs": [str(c.run_dir) for c in members],
        "val": {k: v for k, v in best.metrics.items() if k.startswith("val_")},
        "test": {k: v for k, v in best.metrics.items() if k.startswith("test_")},
        "best_yaml": str(folder / "best.yaml"),
        "ranking": [[groups[key][0].settings, means[key], len(groups[key])] for key in ranked],
    }
    write_json(folder / "selection.json", selection)
    return selection
