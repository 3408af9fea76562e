"""Run a planned sweep: each run is a separate `rnnl2 train` process, started here (`local`:
`--jobs N`, CPU threads split between them, one GPU each), as a Ray task (`ray_backend`) or a
SLURM job (`slurm`); the manifest records every status change, so the same command resumes an
interrupted sweep. This module picks the backend; each backend runs the runs it is given."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import load_config
from ..mlflow_tracking import parent_run
from ..runs import FolderLock, remove_write_leftovers
from ..sweep import SweepSpec, mirror_done_runs, reconcile, write_definition
from ..manifest import Manifest, PlannedRun
from .common import EventFn, Launch, gpu_ids, jobs_for, raise_interrupt, threads_per_run
from .local import run_local
from .ray_backend import run_ray

__all__ = ["EventFn", "Launch", "SweepResult", "execute", "gpu_ids", "jobs_for", "run_sweep", "threads_per_run"]


@dataclass
class SweepResult:
    sweep_dir: Path
    records: list[dict[str, Any]]
    skipped: int = 0
    interrupted: bool = False
    failed: list[dict[str, Any]] = field(default_factory=list)


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
                result.interrupted = execute(spec, todo_records, manifest, launch, on_event)
            result.failed = [r for r in manifest.records if r["status"] in ("failed", "interrupted")]
            ended("interrupted" if result.interrupted else "completed")  # a failed run is its own FAILED child
        return result


def execute(spec: SweepSpec, todo: list, manifest: Manifest, launch: Launch, on_event: EventFn) -> bool:
    """Run `todo`, a list of (PlannedRun, manifest record), on the chosen backend; each record's
    `resume` and `pause_after` say how its run starts and where it stops. Returns whether
    Ctrl-C or SIGTERM stopped it (the runs saved their state; a rerun resumes them)."""
    runner = run_ray if launch.backend == "ray" else run_local
    if launch.backend == "slurm":
        from .slurm import run_slurm as runner  # here, so submitit loads only for SLURM sweeps
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        runner(spec, todo, manifest, launch, on_event)
    except KeyboardInterrupt:
        return True
    finally:
        signal.signal(signal.SIGTERM, previous)
    return False
