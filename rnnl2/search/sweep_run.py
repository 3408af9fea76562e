"""Running what a sweep or a tune planned: each run not yet done becomes a `launch.Job` (its
`rnnl2 train` argv, fresh or resumed as its folder says), and the manifest is the journal the
backend reports to. `run_sweep` is the whole of `rnnl2 sweep` after planning; a tune calls
`run_planned` once per rung."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import load_config
from ..launch import EventFn, Job, Launch, execute
from ..mlflow_tracking import parent_run
from ..runs import FolderLock, remove_write_leftovers
from ..status import ManifestStatus
from .manifest import Manifest, ManifestJournal, PlannedRun
from .sweep import SweepSpec, mirror_done_runs, reconcile, train_command, write_definition


@dataclass
class SweepResult:
    sweep_dir: Path
    records: list[dict[str, Any]]
    skipped: int = 0
    interrupted: bool = False
    failed: list[dict[str, Any]] = field(default_factory=list)


def job_of(spec: SweepSpec, run: PlannedRun, record: dict[str, Any], logs: Path) -> Job:
    """One planned run as a job; its record's `resume` and `pause_after` say how it starts and
    where it stops."""
    pause = record.get("pause_after")
    return Job(
        name=run.name,
        fresh_argv=train_command(spec, run, (), False, pause),
        resumed_argv=train_command(spec, run, (), True, pause),
        resume=bool(record["resume"]),
        run_dir=run.run_dir,
        log_path=logs / f"{run.name}.log",
        pause_after=pause,
        config_hashes=tuple(sorted(run.accepted_hashes)),
        config=spec.config,
        overrides=tuple(run.overrides),
    )


def run_planned(spec: SweepSpec, todo: list, manifest: Manifest, launch: Launch, on_event: EventFn) -> bool:
    """Run `todo`, a list of (PlannedRun, manifest record), on the launch's backend; the manifest
    records every start and end. Returns whether Ctrl-C or SIGTERM stopped it."""
    folder = manifest.path.parent
    jobs = [job_of(spec, run, record, folder / "logs") for run, record in todo]
    return execute(jobs, ManifestJournal(manifest, on_event), launch, folder)


def run_sweep(
    spec: SweepSpec,
    runs: list[PlannedRun],
    sweep_dir: Path,
    launch: Launch,
    on_event: EventFn = lambda kind, record: None,
) -> SweepResult:
    """Run every run not yet done, as its folder tells (see `sweep.reconcile`): an interrupted or
    killed run continues from its last checkpoint; a failed attempt is set aside and run again."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with FolderLock(sweep_dir):  # one driver per sweep folder; `running` records of a dead one are stale
        remove_write_leftovers(sweep_dir, ("sweep.json", "sweep.jsonl", "best.yaml", "selection.json"))
        write_definition(sweep_dir, spec, runs)
        manifest = Manifest(sweep_dir)
        manifest.merge(runs)
        done, todo = reconcile(manifest, runs)
        definition = {"config": str(spec.config), "set": spec.fixed, "grid": spec.grid, "runs": len(runs)}
        with parent_run(sweep_dir, load_config(spec.config, spec.fixed), "sweep", definition) as ended:
            mirror_done_runs(spec, done)
            for run in done:
                on_event("skip", manifest.record(run.name))
            todo_records = [(run, manifest.record(run.name)) for run, _ in todo]
            result = SweepResult(sweep_dir, manifest.records, skipped=len(done))
            with launch:
                result.interrupted = run_planned(spec, todo_records, manifest, launch, on_event)
            stopped = (ManifestStatus.FAILED, ManifestStatus.INTERRUPTED)
            result.failed = [r for r in manifest.records if r["status"] in stopped]
            ended("interrupted" if result.interrupted else "completed")  # a failed run is its own FAILED child
        return result
