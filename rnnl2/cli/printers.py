"""How `sweep` and `tune` report as they go: one stderr line per run event, and on a terminal a
live status line under them (runs done/running/failed of the total, epochs against the plan,
ETA, and the tune's rung). Piped, only the lines are written, as a log would want them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from rich.live import Live

from .console import err
from .live import Board

Printer = TypeVar("Printer", bound="LiveLine")


class LiveLine:
    """A `Board` drawn under the printed lines while stderr is a terminal; nothing otherwise."""

    def __init__(self, board: Board, quiet: bool):
        self.board = board
        self.live = (
            Live(board, console=err, refresh_per_second=4, transient=True) if not quiet and err.is_terminal else None
        )

    def __enter__(self: Printer) -> Printer:  # a SweepPrinter's `with` yields the SweepPrinter
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self.live is not None:
            self.live.stop()


class SweepPrinter(LiveLine):
    """Sweep events as stderr lines: each start, finish and failure as it happens."""

    def __init__(self, runs: list[Any], quiet: bool):
        board = Board("runs", len(runs), sum(r.epochs for r in runs), plan={r.name: r.epochs for r in runs})
        super().__init__(board, quiet)
        self.total, self.quiet, self.finished = len(runs), quiet, 0

    def __call__(self, kind: str, record: dict[str, Any]) -> None:
        name = record["name"]
        self.track(kind, record)
        if kind in ("done", "failed", "interrupted", "skip"):
            self.finished += 1
        where = f"[{self.finished}/{self.total}]"
        if kind in ("failed", "interrupted"):
            err.print(f"{where} [red]{kind}[/red] {name}: {record.get('error')}", highlight=False)
        elif self.quiet:
            return
        elif kind == "done":
            m = record.get("metrics") or {}
            value = m.get("best_value")
            shown = f"{m.get('best_metric')} {value:.4g}" if isinstance(value, (int, float)) else ""
            err.print(f"{where} done {name}  {shown}  {m.get('wall_seconds', 0):.1f}s", highlight=False)
        elif kind == "skip":
            err.print(f"{where} already done {name}", highlight=False)
        elif kind == "start":
            err.print(f"{where} {'resume' if record.get('resume') else 'start'} {name}", highlight=False)

    def track(self, kind: str, record: dict[str, Any]) -> None:
        name, folder = record["name"], Path(record["run_dir"])
        if kind == "start":
            self.board.start(name, folder)
        elif kind == "skip":
            self.board.known(name, (record.get("metrics") or {}).get("epochs_run") or 0, done=True)
        elif kind in ("done", "failed"):
            self.board.end(name, kind, folder)
        elif kind == "interrupted":
            self.board.end(name, "paused", folder)


class TunePrinter(LiveLine):
    """Tune events as stderr lines: each start, rung reached, promotion, stop and end."""

    def __init__(self, quiet: bool, trials: int = 0, budget: int = 0, tune_dir: Path | None = None):
        super().__init__(Board("trials", trials, budget), quiet)
        self.quiet, self.tune_dir = quiet, tune_dir
        self.rung: dict[str, Any] = {}
        self.back: set[str] = set()  # the names of the current rung that came back from it

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        self.track(kind, info)
        if kind in ("rung", "known"):
            return
        value = info.get("value")
        shown = f"{info['metric']} {value:.4g}" if isinstance(value, (int, float)) else ""
        at = f"epoch {info['epoch']}"
        if kind in ("failed", "interrupted", "killed"):
            err.print(f"[red]{kind}[/red] {info['name']} (→ {at}): {info.get('error')}", highlight=False)
            return
        lines = {
            "start": f"{'resume' if info.get('resume') else 'start'} {info['name']} → {at}",
            "paused": f"paused {info['name']} at {at}  {shown}",
            "completed": f"completed {info['name']}  {shown}  ({info['epochs']} epochs)",
            "promoted": f"promoted {info['name']}  {shown} at {at}",
            "stopped": f"stopped {info['name']}  {shown} at {at}",
            "exploited": f"copied {info.get('source')} into {info['name']} at {at} ({shown}), "
            f"going on with {info.get('params')}",
            "skip": f"already at {at}: {info['name']}",
        }
        if not self.quiet and kind in lines:
            err.print(lines[kind], highlight=False)

    def track(self, kind: str, info: dict[str, Any]) -> None:
        board, name = self.board, info.get("name")
        if kind == "rung":
            self.rung, self.back = info, set()
        elif kind in ("known", "skip"):
            board.known(name, info.get("epochs") or 0, done=info.get("state") in ("completed", "stopped"))
            if info.get("state") == "failed":
                board.failed.add(name)
        elif kind == "start" and self.tune_dir is not None:
            board.start(name, self.tune_dir / name)
        elif kind in ("paused", "completed", "failed", "interrupted", "killed"):
            board.end(name, {"completed": "done", "failed": "failed"}.get(kind, "paused"))
            self.back.add(name)
        elif kind == "stopped":
            board.known(name, info.get("epochs") or 0, done=True)
        if self.rung:
            names = self.rung["names"]
            left = len([n for n in names if n not in self.back])
            board.rung = (
                f"rung {self.rung['rung'] + 1}/{self.rung['rungs']} (epoch {self.rung['epoch']}, "
                f"bracket {self.rung['bracket']}): {left}/{len(names)} left"
            )
