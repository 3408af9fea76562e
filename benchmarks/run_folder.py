"""What a benchmark does with a run folder it finds, so that a stopped benchmark continues and no
trained run is lost: an ended run is read back, a stopped one resumes from its last.pt, and an
attempt with nothing to resume from is moved aside (`<run>.failed-N/`, as `rnnl2 sweep` does)."""

from __future__ import annotations

from pathlib import Path

from rnnl2.runs import PAUSED, read_summary
from rnnl2.sweep import set_aside

STOPPED = ("interrupted", PAUSED)
"""Statuses of a run that has not ended; every other status (diverged included) is a result."""


def train_args(config: Path, overrides: list[str], run_dir: Path) -> list[str] | None:
    """The `rnnl2 train` arguments that bring `run_dir` to its end, or None when it has ended."""
    summary = read_summary(run_dir) if run_dir.exists() else None
    if summary is not None and summary.get("status") not in STOPPED:
        return None
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return ["train", "--resume", str(run_dir)]
    if run_dir.exists():
        set_aside(run_dir)
    sets = [arg for item in overrides for arg in ("--set", item)]
    return ["train", str(config), *sets, "--run-dir", str(run_dir)]
