"""The live status line of `sweep` and `tune` on a terminal: runs done, running and failed out
of the total, epochs trained against the plan, an ETA from this call's pace, and for a tune the
rung being trained. The counts come from the launcher's events; the epochs of a run still out
are read from its `metrics.jsonl` (one line per epoch), at most once a second, so the line moves
between events too. Only the CLI renders it (through `rich.live.Live`); nothing here prints."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, ConsoleOptions, RenderResult
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

POLL_SECONDS = 1.0
"""How often the epochs of the runs still out are read from their folders."""


def epochs_in(run_dir: Path) -> int:
    """Epochs a run folder has logged: the lines of its metrics.jsonl (a torn last one not counted)."""
    try:
        return (run_dir / "metrics.jsonl").read_bytes().count(b"\n")
    except OSError:
        return 0


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@dataclass
class Board:
    """What the status line shows, updated from the launcher's events (any thread may render it).

    Names are sets, so a run announced twice (a tune trial that pauses, a killed one that is
    resumed) is counted once, and epochs are the last count of each run's own folder."""

    label: str
    """`runs` for a sweep, `trials` for a tune."""
    total: int
    budget: int
    """The epochs planned in all: each run's `train.epochs` for a sweep, the halving budget for a tune."""
    plan: dict[str, int] = field(default_factory=dict)
    """A sweep's epochs per run: a run that stopped early then plans only what it trained."""
    done: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    epochs: dict[str, int] = field(default_factory=dict)
    """Epochs each run has logged: read at its end, and every POLL_SECONDS while it is out."""
    running: dict[str, Path] = field(default_factory=dict)
    at_start: dict[str, int] = field(default_factory=dict)
    """Epochs each run had when this call started it: what it trained before does not set the pace."""
    trained_here: int = 0
    rung: str = ""
    started: float = field(default_factory=time.monotonic)
    polled: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, name: str, run_dir: Path) -> None:
        with self.lock:
            self.running[name] = run_dir
            self.at_start[name] = self.epochs[name] = epochs_in(run_dir)
            self.failed.discard(name)

    def end(self, name: str, outcome: str, run_dir: Path | None = None) -> None:
        """A run came back: `done` or `failed` for good, or `paused` (a tune rung; an interrupted
        or killed run also comes back later)."""
        with self.lock:
            folder = self.running.pop(name, run_dir)
            if folder is not None:
                self.epochs[name] = epochs_in(folder)
                self.trained_here += max(0, self.epochs[name] - self.at_start.pop(name, self.epochs[name]))
            if outcome == "done":
                self.done.add(name)
            elif outcome == "failed":
                self.failed.add(name)

    def known(self, name: str, epochs: int, done: bool) -> None:
        """A run finished (or reached its rung) before this call."""
        with self.lock:
            self.epochs[name] = max(epochs, self.epochs.get(name, 0))
            if done:
                self.done.add(name)

    def counts(self) -> tuple[int, int, float | None]:
        """Epochs trained, epochs planned, and seconds left at this call's pace (None: no pace yet)."""
        with self.lock:
            now = time.monotonic()
            if now - self.polled >= POLL_SECONDS:
                self.polled = now
                for name, run_dir in self.running.items():
                    self.epochs[name] = epochs_in(run_dir)
            trained = sum(self.epochs.values())
            here = self.trained_here + sum(self.epochs[n] - self.at_start.get(n, 0) for n in self.running)
            ended = self.done | self.failed
            planned = sum(self.epochs.get(n, 0) if n in ended else e for n, e in self.plan.items()) or self.budget
        planned = max(planned, trained)
        eta = (planned - trained) * (now - self.started) / here if here > 0 else None
        return trained, planned, eta

    def text(self) -> str:
        """Most telling first, so a narrow terminal elides the least: counts, epochs, ETA, rung, clock."""
        trained, planned, eta = self.counts()
        parts = [f"{self.label} {len(self.done)}/{self.total} done", f"{len(self.running)} running"]
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        line = " · ".join(parts) + f" │ epochs {trained}/{planned} │ ETA {clock(eta) if eta is not None else '…'}"
        if self.rung:
            line += f" │ {self.rung}"
        return line + f" │ {clock(time.monotonic() - self.started)} elapsed"

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        trained, planned, _ = self.counts()
        width = min(20, max(5, options.max_width // 5))
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=width, no_wrap=True)
        grid.add_column(no_wrap=True, overflow="ellipsis")
        grid.add_row(ProgressBar(total=max(planned, 1), completed=trained, width=width), Text(self.text()))
        yield grid
