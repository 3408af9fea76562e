"""What a benchmark does with a run folder it finds, so that a stopped benchmark continues and no
trained run is lost: an ended run is read back, a stopped one resumes from its last.pt, and an
attempt with nothing to resume from is moved aside (`<run>.failed-N/`, as `rnnl2 sweep` does).
A folder that holds another config is refused, not read back as this run's result."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rnnl2.config import load_config, to_plain_dict
from rnnl2.runs import read_summary
from rnnl2.status import RunStatus
from rnnl2.run_state import config_hash, folder_config_hash
from rnnl2.runs import set_aside

STOPPED = ("interrupted", RunStatus.PAUSED)
"""Statuses of a run that has not ended; every other status (diverged included) is a result."""


def train_args(config: Path, overrides: list[str], run_dir: Path) -> list[str] | None:
    """The `rnnl2 train` arguments that bring `run_dir` to its end, or None when it has ended."""
    found = folder_config_hash(run_dir) if run_dir.exists() else None  # None: no readable config.yaml
    if found is not None and found != config_hash(to_plain_dict(load_config(config, overrides))):
        raise RuntimeError(
            f"{run_dir} holds another config than {config} with {overrides}; move it or use another --out"
        )
    summary = read_summary(run_dir) if run_dir.exists() else None
    if summary is not None and summary.get("status") not in STOPPED:
        return None
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return ["train", "--resume", str(run_dir)]
    if run_dir.exists():
        set_aside(run_dir)
    sets = [arg for item in overrides for arg in ("--set", item)]
    return ["train", str(config), *sets, "--run-dir", str(run_dir)]


def rnnl2(*args: str) -> subprocess.CompletedProcess:
    """The CLI in a child process. Exit 1 (a run or trial failed, e.g. diverged at a huge λ) still
    has a result to read; any other failure raises with the end of its stderr."""
    done = subprocess.run([sys.executable, "-m", "rnnl2", *args], capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"rnnl2 {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done
