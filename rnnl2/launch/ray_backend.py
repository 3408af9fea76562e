"""The Ray backend: each run a Ray task that starts the same child process as the local backend."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ..errors import INTERRUPTED, Rnnl2Error
from .common import Launch, cpu_count, read_outcome, start_child, thread_env, threads_per_run
from .job import Job, Journal


def execute_run(command: list[str], env_extra: dict[str, str], run_dir: str, log_path: str) -> dict[str, Any]:
    """One run inside a Ray task: the same child process as the local backend, its outcome returned."""
    child = start_child([sys.executable, "-m", "rnnl2", *command], env_extra, Path(log_path))
    return read_outcome(child.wait(), Path(run_dir), Path(log_path))


def run_ray(jobs: list[Job], journal: Journal, launch: Launch, folder: Path) -> None:
    """Each job a Ray task with its CPU share (and one GPU when the cluster has them); the driver
    keeps the journal. Run folders must be on a filesystem the workers share with the driver."""
    try:
        import ray
    except ImportError:
        raise Rnnl2Error("--backend ray needs Ray: pip install 'rnnl2[ray]'") from None
    address = launch.ray_address or os.environ.get("RAY_ADDRESS")
    try:
        ray.init(
            address=address,
            ignore_reinit_error=True,
            log_to_driver=False,
            include_dashboard=False,
            **({} if address else {"num_cpus": cpu_count()}),
        )
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise Rnnl2Error(f"cannot start or reach Ray{f' at {address}' if address else ''}: {error}") from None
    threads = threads_per_run(launch.threads, launch.jobs, int(ray.cluster_resources().get("CPU", 1)))
    gpus = 1 / launch.runs_per_gpu if ray.cluster_resources().get("GPU", 0) else 0  # fractional: K per GPU
    task = ray.remote(num_cpus=threads, num_gpus=gpus, max_retries=0)(execute_run)
    pending: dict[Any, Job] = {}
    for job in jobs:
        ref = task.remote(job.argv, thread_env(threads), str(job.run_dir), str(job.log_path))
        pending[ref] = job
        journal.started(job)
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except Exception as error:  # the task itself died (worker lost, cancelled)
                outcome = {"exit_code": -1, "error": f"ray task failed: {type(error).__name__}: {error}"}
            if not journal.ended(job, outcome) and launch.fail_fast:
                cancel_tasks(ray, pending, journal)
    except KeyboardInterrupt:
        cancel_tasks(ray, pending, journal)
        raise
    finally:
        ray.shutdown()


def cancel_tasks(ray, pending: dict, journal: Journal) -> None:
    for ref, job in list(pending.items()):
        ray.cancel(ref, force=True)
        journal.ended(job, {"exit_code": INTERRUPTED, "error": "interrupted"})
    pending.clear()
