"""What a backend runs and whom it tells. A `Job` is one `rnnl2 train` process: how it starts
fresh or continues its folder, where it logs; a `Journal` hears when each job starts and how it
ends. That is all a backend knows of the sweep or tune that planned the jobs: the caller's
journal (`manifest.ManifestJournal`) keeps the records, so no backend reads or writes a manifest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

EventFn = Callable[[str, dict[str, Any]], None]
"""A printer of the caller's: ("start" | "done" | "failed" | …, the run's record)."""


@dataclass(frozen=True, kw_only=True)
class Job:
    """One `rnnl2 train` process; argv lists start after `rnnl2` (`["train", …]`)."""

    name: str
    fresh_argv: list[str]
    """Starts the run in an empty folder."""
    resumed_argv: list[str]
    """Continues the run from its folder's checkpoints/last.pt (`train --resume`)."""
    resume: bool
    """Which of the two the caller's look at the folder chose; a requeued SLURM job looks again."""
    run_dir: Path
    log_path: Path
    pause_after: int | None = None
    """The epoch it stops after (a tune rung), or None: to its end."""
    config_hashes: tuple[str, ...] = ()
    """The configs its folder may hold (`run_state.folder_state`); another one is set aside."""
    config: Path | None = None
    overrides: tuple[str, ...] = ()
    """What `fresh_argv` trains (CONFIG and its `--set`s), for a backend that trains in this process (`--fused`)."""

    @property
    def argv(self) -> list[str]:
        return self.resumed_argv if self.resume else self.fresh_argv


class Journal(Protocol):
    """What a backend tells its caller, as it happens."""

    def started(self, job: Job, **fields: Any) -> None:
        """The job is out (fields: its pid, or its scheduler's job id)."""

    def noted(self, job: Job, **fields: Any) -> None:
        """Something the scheduler says while it runs (SLURM's job state)."""

    def ended(self, job: Job, outcome: dict[str, Any], report: bool = True) -> bool:
        """How it ended (`exit_code`, `summary`, `error`); True when the run is done. `report`
        is False while a crash of the driver unwinds: recorded, not printed."""
        ...
