"""The Ray backend: each run a Ray task that starts the same child process as the local backend."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import Rnnl2Error
from ..sweep import SweepSpec, train_command
from ..manifest import Manifest
from .common import EventFn, Launch, cpu_count, finish, read_outcome, start_child, thread_env, threads_per_run


def execute_run(command: list[str], env_extra: dict[str, str], run_dir: str, log_path: str) -> dict[str, Any]:
    """One run inside a Ray task: the same child process as the local backend, its outcome returned."""
    child = start_child([sys.executable, "-m", "rnnl2", *command[1:]], env_extra, Path(log_path))
    return read_outcome(child.wait(), Path(run_dir), Path(log_path))


def run_ray(spec: SweepSpec, todo: list, manifest: Manifest, launch: Launch, on_event: EventFn) -> None:
    """Each run a Ray task with its CPU share (and one GPU when the cluster has them); the driver
    writes the manifest. Run folders must be on a filesystem the workers share with the driver."""
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
    logs = manifest.path.parent / "logs"
    pending = {}
    for run, record in todo:
        ref = task.remote(
            train_command(spec, run, resume=record["resume"], pause_after=record.get("pause_after")),
            thread_env(threads),
            str(run.run_dir),
            str(logs / f"{run.name}.log"),
        )
        pending[ref] = run
        on_event("start", manifest.update(run.name, status="running", started=time.time()))
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            run = pending.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except Exception as error:  # the task itself died (worker lost, cancelled)
                outcome = {"exit_code": -1, "error": f"ray task failed: {type(error).__name__}: {error}"}
            record = finish(manifest, run, outcome, on_event)
            if record["status"] != "done" and launch.fail_fast:
                cancel_tasks(ray, pending, manifest, on_event)
    except KeyboardInterrupt:
        cancel_tasks(ray, pending, manifest, on_event)
        raise
    finally:
        ray.shutdown()


def cancel_tasks(ray, pending: dict, manifest: Manifest, on_event: EventFn) -> None:
    for ref, run in list(pending.items()):
        ray.cancel(ref, force=True)
        finish(manifest, run, {"exit_code": 130, "error": "interrupted"}, on_event)
    pending.clear()
