"""Run jobs: each `Job` is a separate `rnnl2 train` process, started here (`local`: `--jobs N`,
CPU threads split between them, one GPU each), as a Ray task (`ray_backend`) or a SLURM job
(`slurm`); each backend tells the caller's `Journal` when a job starts and how it ends. This
module picks the backend. Nothing here knows what a sweep or a tune is (`sweep_run` does)."""

from __future__ import annotations

import signal
from pathlib import Path

from .common import Launch, gpu_ids, jobs_for, raise_interrupt, threads_per_run
from .job import EventFn, Job, Journal
from .local import run_local
from .ray_backend import run_ray

__all__ = ["EventFn", "Job", "Journal", "Launch", "execute", "gpu_ids", "jobs_for", "threads_per_run"]


def execute(jobs: list[Job], journal: Journal, launch: Launch, folder: Path) -> bool:
    """Run `jobs` on the chosen backend, its logs (and SLURM's files) under `folder`. Returns
    whether Ctrl-C or SIGTERM stopped it (the runs saved their state; a rerun resumes them)."""
    runner = run_ray if launch.backend == "ray" else run_local
    if launch.fused:
        from .fused_backend import run_fused as runner  # here, so torch loads only for a fused sweep
    if launch.backend == "slurm":
        from .slurm import run_slurm as runner  # here, so submitit loads only for SLURM sweeps
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        runner(jobs, journal, launch, folder)
    except KeyboardInterrupt:
        return True
    finally:
        signal.signal(signal.SIGTERM, previous)
    return False
