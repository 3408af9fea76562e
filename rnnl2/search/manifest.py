"""`sweep.jsonl`, the manifest one sweep or tune keeps: one record per planned run, and the
statuses a record takes. Sweep and tune write it through `Manifest`; while the runs run, the
backends' `launch.Journal` is a `ManifestJournal`, so no backend knows the manifest."""

from __future__ import annotations

import json
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import INTERRUPTED, Rnnl2Error, Rnnl2Warning
from ..launch.job import EventFn, Job
from ..runs import read_jsonl, write_text
from ..status import ManifestStatus

STATUSES = tuple(ManifestStatus)


@dataclass(kw_only=True)
class PlannedRun:
    index: int
    name: str
    """Folder name inside the sweep folder: index and the varying overrides."""
    varying: dict[str, Any]
    overrides: list[str]
    config_hash: str
    run_dir: Path
    epochs: int = 0
    """`train.epochs` of its config: what the live progress plans for it."""
    resume_sets: list[str] = field(default_factory=list)
    """--set changes its next resume applies with --force (a pbt member that took another's folder)."""
    source_hash: str | None = None
    """pbt: the config hash of the member whose folder it took, which its folder holds until that
    resume rewrites config.yaml."""

    @property
    def accepted_hashes(self) -> set[str]:
        """The configs its folder may hold and still be this run."""
        return {self.config_hash} | ({self.source_hash} if self.source_hash else set())


class Manifest:
    """`sweep.jsonl`: one JSON object per run, rewritten atomically whenever a status changes.

    It is a cache of the run folders, which are the truth: `reconcile` rebuilds what it says
    from them on every start, so a lost, torn or stale manifest never costs a finished run."""

    def __init__(self, sweep_dir: Path):
        self.path = sweep_dir / "sweep.jsonl"
        self.records: list[dict[str, Any]] = []
        if self.path.exists():
            try:
                self.records = read_manifest(sweep_dir)
            except Rnnl2Error as error:
                warnings.warn(f"{error}; rebuilding it from the run folders", Rnnl2Warning, stacklevel=2)
        elif any(sweep_dir.glob("[0-9][0-9][0-9]-*/config.yaml")):
            warnings.warn(f"{self.path} is missing; rebuilding it from the run folders", Rnnl2Warning, stacklevel=2)

    def save(self) -> None:
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))

    def merge(self, runs: list[PlannedRun], replan: bool = False) -> None:
        """Add the planned runs; keep the records of the same run (same folder and hash). With
        `replan` (a pbt member's values change as it goes), a record takes its run's new plan."""
        old = {r.get("name"): r for r in self.records if isinstance(r.get("name"), str)}
        for name, record in old.items():
            match = next((r for r in runs if r.name == name), None)
            if replan and match is not None:
                record |= {"overrides": match.varying, "set": match.overrides, "config_hash": match.config_hash}
            if match is None or record.get("config_hash") != match.config_hash:
                raise Rnnl2Error(
                    f"{self.path} belongs to a different sweep (run {name} differs); use another --sweep-dir"
                )
        self.records = [
            old.get(r.name)
            or {
                "index": r.index,
                "name": r.name,
                "overrides": r.varying,
                "set": r.overrides,
                "config_hash": r.config_hash,
                "run_dir": str(r.run_dir.absolute()),
                "status": "pending",
            }
            for r in runs
        ]
        self.save()

    def record(self, name: str) -> dict[str, Any]:
        return next(r for r in self.records if r["name"] == name)

    def update(self, name: str, **fields: Any) -> dict[str, Any]:
        record = self.record(name)
        record.update(fields)
        self.save()
        return record


def read_manifest(sweep_dir: Path) -> list[dict[str, Any]]:
    """The records of `sweep.jsonl`, in run order (a torn last line is skipped with a warning)."""
    records = read_jsonl(sweep_dir / "sweep.jsonl")
    for number, record in enumerate(records, 1):
        if not isinstance(record.get("name"), str) or record.get("status") not in STATUSES:
            raise Rnnl2Error(f"{sweep_dir / 'sweep.jsonl'}: record {number} is not a sweep record; the file is damaged")
    return records


def summary_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """What the manifest keeps of a run's summary.json: how it ended and its numbers."""
    keep = ("status", "best_epoch", "best_metric", "best_value", "epochs_run", "steps", "wall_seconds", "final")
    return {k: v for k, v in summary.items() if k in keep or k.startswith(("val_", "test_"))}


class ManifestJournal:
    """The `launch.Journal` of a sweep or tune: each job's start and end into its record of
    `sweep.jsonl` (written before the printer hears of it), then to `on_event`."""

    def __init__(self, manifest: Manifest, on_event: EventFn):
        self.manifest, self.on_event = manifest, on_event

    def started(self, job: Job, **fields: Any) -> None:
        self.on_event(
            "start", self.manifest.update(job.name, status=ManifestStatus.RUNNING, started=time.time(), **fields)
        )

    def noted(self, job: Job, **fields: Any) -> None:
        self.manifest.update(job.name, **fields)

    def ended(self, job: Job, outcome: dict[str, Any], report: bool = True) -> bool:
        """Done with its metrics, or failed/interrupted with the error."""
        code, summary = outcome["exit_code"], outcome.get("summary")
        fields: dict[str, Any] = {"exit_code": code, "finished": time.time()}
        if summary:
            fields["metrics"] = summary_metrics(summary)
        if code == 0:
            record = self.manifest.update(job.name, status=ManifestStatus.DONE, **fields)
        else:
            interrupted = code in (INTERRUPTED, -signal.SIGTERM, -signal.SIGINT)
            status = ManifestStatus.INTERRUPTED if interrupted else ManifestStatus.FAILED
            record = self.manifest.update(
                job.name, status=status, error=outcome.get("error") or f"exit code {code}", **fields
            )
        if report:
            self.on_event(str(record["status"]), record)
        return record["status"] == ManifestStatus.DONE
