"""`rnnl2 diff RUN_A RUN_B`: two run folders side by side, like `git diff` for runs: the config
keys whose values differ, then every final number of their summaries with the change."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .compare import load_run, summary_numbers
from .errors import Rnnl2Error


@dataclass(frozen=True)
class RunDiff:
    a: Path
    b: Path
    config: list[tuple[str, Any, Any]]
    """(dotted key, value in a, value in b) for every key that differs or is in one run only."""
    metrics: list[tuple[str, float | None, float | None]]
    """(summary number, a, b) for every number either summary holds; timing last."""
    status: tuple[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "a": str(self.a),
            "b": str(self.b),
            "status": list(self.status),
            "config": [{"key": k, "a": x, "b": y} for k, x, y in self.config],
            "metrics": [{"key": k, "a": x, "b": y, "change": change(x, y)} for k, x, y in self.metrics],
        }


MISSING = "(absent)"
TIMING = ("wall_seconds", "seconds", "samples_per_s")


def change(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def diff_runs(a: Path, b: Path) -> RunDiff:
    for folder in (a, b):
        if not (folder / "config.yaml").is_file():
            raise Rnnl2Error(f"{folder}: not a run folder (no config.yaml)")
    run_a, run_b = load_run(a), load_run(b)
    keys = list(dict.fromkeys([*run_a.config, *run_b.config]))
    config = [
        (k, run_a.config.get(k, MISSING), run_b.config.get(k, MISSING))
        for k in keys
        if run_a.config.get(k, MISSING) != run_b.config.get(k, MISSING)
    ]
    numbers_a, numbers_b = summary_numbers(run_a.summary), summary_numbers(run_b.summary)
    names = sorted(
        dict.fromkeys([*numbers_a, *numbers_b]),
        key=lambda k: (not k.startswith(("test_", "val_", "best_")), k.endswith(TIMING), k.startswith("baselines."), k),
    )
    metrics = [(k, numbers_a.get(k), numbers_b.get(k)) for k in names if not k.startswith("versions.")]
    return RunDiff(a, b, config, metrics, (run_a.summary.get("status", "?"), run_b.summary.get("status", "?")))
