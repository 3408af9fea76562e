"""What a run folder says, decided in one place for sweep, tune and SLURM: which config it holds
(the run-identity hash), and whether it is done, paused at a rung, failed by itself, or stopped
from outside with a checkpoint to resume from. The run folders are the truth; the manifests and
trials files are caches rebuilt from this on every start."""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection

from .config import load_config, to_plain_dict
from .config.schema import OutputConfig
from .errors import INTERRUPTED, Rnnl2Error
from .runs import check_unlocked, read_summary
from .status import FINISHED, RunStatus

KILLED_EXIT_CODES = (INTERRUPTED, 128 + 9, 128 + 15)
"""Exit codes of a run stopped from outside: Ctrl-C, and what a shell or launcher reports for
SIGKILL and SIGTERM (a signal's own code is negative)."""


def config_hash(cfg_dict: dict[str, Any]) -> str:
    """12 hex digits of the resolved config: two runs with the same hash train the same model.
    What only says where results also go (`output.*`: tracking, checkpoints; the mid-epoch
    checkpoint cadence) is hashed at its default, so turning MLflow or TensorBoard on for a
    finished sweep finds its runs done instead of planning new ones (and the hashes of folders
    written with the defaults stay what they were)."""
    return hashlib.sha256(json.dumps(run_identity(cfg_dict), sort_keys=True).encode()).hexdigest()[:12]


def run_identity(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """The config as far as it decides what is trained: output.* and train.checkpoint_every_steps at their defaults."""
    plain = dict(cfg_dict)
    if "output" in plain:
        plain["output"] = OutputConfig().model_dump(mode="json", by_alias=True)
    if isinstance(plain.get("train"), dict) and "checkpoint_every_steps" in plain["train"]:
        plain["train"] = {**plain["train"], "checkpoint_every_steps": None}
    return plain


def folder_config_hash(run_dir: Path) -> str | None:
    """The config hash of the config.yaml a run folder holds, or None when it cannot be read."""
    try:
        return config_hash(to_plain_dict(load_config(run_dir / "config.yaml")))
    except Rnnl2Error:
        return None


class FolderState(str, enum.Enum):
    ABSENT = "absent"
    DONE = "done"
    """Finished by its own rules (completed, early stopped, max steps): its test metrics are in."""
    REACHED = "reached"
    """Paused at (or past) the epoch asked for: a tune trial at its rung."""
    DIVERGED = "diverged"
    RESUME = "resume"
    """Stopped from outside (a signal, a kill, a driver that died) with a last.pt to continue from."""
    FAILED = "failed"
    """Failed by itself (a crash it recorded, an exit code it chose), left nothing to resume from,
    or holds another config: set it aside and start again."""


@dataclass(frozen=True)
class FolderReading:
    state: FolderState
    summary: dict[str, Any] = field(default_factory=dict)


def killed_from_outside(exit_code: Any, summary: dict[str, Any]) -> bool:
    """Whether a run's failure came from outside it (a signal: SIGKILL, the OOM killer), so the
    same run would not fail again. A divergence, a crash it recorded, or an exit code it chose
    itself are its own."""
    if summary.get("status") in (RunStatus.DIVERGED, RunStatus.FAILED):
        return False
    return isinstance(exit_code, int) and (exit_code < 0 or exit_code in KILLED_EXIT_CODES)


def folder_state(
    run_dir: Path, config_hashes: Collection[str], exit_code: int | None = None, target: int | None = None
) -> FolderReading:
    """Read a run folder once. `config_hashes`: the configs it may hold (another one: FAILED);
    `exit_code`: the last exit of its process, when a driver recorded one; `target`: the epoch a
    paused run should have reached (a tune's rung; None: a paused run is resumed)."""
    if not run_dir.exists():
        return FolderReading(FolderState.ABSENT)
    check_unlocked(run_dir)  # a run still being written (an orphan of a killed driver)
    if folder_config_hash(run_dir) not in config_hashes:
        return FolderReading(FolderState.FAILED)
    summary = read_summary(run_dir) or {}
    status = summary.get("status")
    if status in FINISHED:
        return FolderReading(FolderState.DONE, summary)
    if status == RunStatus.PAUSED and target is not None and (summary.get("epochs_run") or 0) >= target:
        return FolderReading(FolderState.REACHED, summary)
    if status == RunStatus.DIVERGED:
        return FolderReading(FolderState.DIVERGED, summary)
    own = status == RunStatus.FAILED or (
        isinstance(exit_code, int) and exit_code > 0 and not killed_from_outside(exit_code, summary)
    )
    if own or not (run_dir / "checkpoints" / "last.pt").is_file():
        return FolderReading(FolderState.FAILED, summary)
    return FolderReading(FolderState.RESUME, summary)
