"""Every status vocabulary, declared once: how a run ended (summary.json), where a run of a sweep
or tune stands (sweep.jsonl), and where a tune's trial stands (trials.json). The enums are
str-valued, so the files keep their plain strings and `RunStatus.PAUSED == "paused"`; a type
checker catches a misspelt member where a literal would pass."""

from __future__ import annotations

import enum


class Status(str, enum.Enum):
    """A str enum that prints as its value (`f"{RunStatus.PAUSED}"` is `paused` on every Python)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    __hash__ = str.__hash__  # Enum hashes the member's name: "paused" and PAUSED would be two set members


class RunStatus(Status):
    """summary.json's `status`: how a run's training ended."""

    COMPLETED = "completed"
    EARLY_STOPPED = "early_stopped"
    MAX_STEPS = "max_steps"
    PAUSED = "paused"
    """Stopped on purpose after an epoch (`train --pause-after`), to be continued with --resume."""
    INTERRUPTED = "interrupted"
    """Ctrl-C or SIGTERM: it saved last.pt and resumes exactly."""
    DIVERGED = "diverged"
    FAILED = "failed"
    """A crash (a bug, the allocator); summary.json carries the error."""


FINISHED = (RunStatus.COMPLETED, RunStatus.EARLY_STOPPED, RunStatus.MAX_STEPS)
"""A run that ended by its own rules: its test metrics are in."""
ENDED = (*FINISHED, RunStatus.DIVERGED, RunStatus.FAILED)
"""A run that will not train further by itself."""


class ManifestStatus(Status):
    """A sweep.jsonl record's `status`: the driver's view of one planned run."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class TrialState(Status):
    """A tune trial's `state` in trials.json."""

    PENDING = "pending"
    RUNNING = "running"
    PROMOTED = "promoted"
    """Admitted to the next rung (or interval), not yet resumed."""
    PAUSED = "paused"
    """At its rung, waiting for the decision."""
    STOPPED = "stopped"
    """Not promoted (pruned)."""
    COMPLETED = "completed"
    FAILED = "failed"


ACTIVE = (TrialState.PENDING, TrialState.RUNNING, TrialState.PROMOTED)
"""States of a trial that still has to train to its rung."""
FINAL = (TrialState.STOPPED, TrialState.COMPLETED, TrialState.FAILED)
