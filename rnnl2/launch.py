"""Run a planned sweep: each run is a separate `python -m rnnl2 train` process, started here
(`--jobs N`, CPU threads split between them, one GPU each) or as a Ray task; the manifest
records every status change, so the same command resumes an interrupted sweep."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import Rnnl2Error
from .runs import FolderLock, read_summary
from .sweep import Manifest, PlannedRun, SweepSpec, reconcile, summary_metrics, train_command, write_definition

EventFn = Callable[[str, dict[str, Any]], None]
POLL_SECONDS = 0.2
RESUMED = "--- resumed from checkpoints/last.pt ---"  # marks where a resumed run's log continues


@dataclass
class SweepResult:
    sweep_dir: Path
    records: list[dict[str, Any]]
    skipped: int = 0
    interrupted: bool = False
    failed: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Launch:
    """How to run the sweep's processes."""

    jobs: int = 1
    backend: str = "local"
    ray_address: str | None = None
    fail_fast: bool = False
    gpus: list[str] = field(default_factory=list)
    """GPUs visible here (local backend): the child in slot k gets gpus[k mod len(gpus)]."""
    threads: int | None = None
    """CPU threads per run (`--threads`); None: $OMP_NUM_THREADS if set, else cores / jobs."""
    isolate: bool = False
    """Local backend: one fresh process per run instead of warm workers (`--isolate`)."""


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
        write_definition(sweep_dir, spec, runs)
        manifest = Manifest(sweep_dir)
        manifest.merge(runs)
        done, todo = reconcile(manifest, runs)
        for run in done:
            on_event("skip", manifest.record(run.name))
        todo_records = [(run, manifest.record(run.name)) for run, _ in todo]
        result = SweepResult(sweep_dir, manifest.records, skipped=len(done))
        result.interrupted = execute(spec, todo_records, manifest, launch, on_event)
        result.failed = [r for r in manifest.records if r["status"] in ("failed", "interrupted")]
        return result


def execute(spec: SweepSpec, todo: list, manifest: Manifest, launch: Launch, on_event: EventFn) -> bool:
    """Run `todo`, a list of (PlannedRun, manifest record), on the chosen backend; each record's
    `resume` and `pause_after` say how its run starts and where it stops. Returns whether
    Ctrl-C or SIGTERM stopped it (the runs saved their state; a rerun resumes them)."""
    runner = run_ray if launch.backend == "ray" else run_local
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        runner(spec, todo, manifest, launch, on_event)
    except KeyboardInterrupt:
        return True
    finally:
        signal.signal(signal.SIGTERM, previous)
    return False


def raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def threads_per_run(requested: int | None, jobs: int, cores: int) -> int:
    """`--threads` if given; else an explicit OMP_NUM_THREADS (a user who set it on a shared
    machine meant it); else this machine's cores split between the `jobs` runs."""
    if requested:
        return requested
    explicit = os.environ.get("OMP_NUM_THREADS", "").strip()
    if explicit.isdigit() and int(explicit) > 0:
        return int(explicit)
    return max(1, cores // max(1, jobs))


def thread_env(threads: int, gpu: str | None = None) -> dict[str, str]:
    """Environment of one child: its share of CPU threads (torch reads OMP_NUM_THREADS), its GPU."""
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def gpu_ids() -> list[str]:
    """The GPUs this driver may hand out, as CUDA_VISIBLE_DEVICES entries: that variable if set,
    else one per line of `nvidia-smi -L` (without importing torch in the driver)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v for v in visible.split(",") if v.strip() and v.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(l for l in listing.splitlines() if l.startswith("GPU "))]


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def finish(manifest: Manifest, run: PlannedRun, outcome: dict[str, Any], on_event: EventFn) -> dict[str, Any]:
    """Record how one run ended: done with its metrics, or failed/interrupted with the error."""
    code, summary = outcome["exit_code"], outcome.get("summary")
    fields: dict[str, Any] = {"exit_code": code, "finished": time.time()}
    if summary:
        fields["metrics"] = summary_metrics(summary)
    if code == 0:
        record = manifest.update(run.name, status="done", **fields)
    else:
        status = "interrupted" if code in (130, -signal.SIGTERM, -signal.SIGINT) else "failed"
        record = manifest.update(run.name, status=status, error=outcome.get("error") or f"exit code {code}", **fields)
    on_event(record["status"], record)
    return record


def read_outcome(code: int, run_dir: Path, log_path: Path) -> dict[str, Any]:
    """Exit code, summary.json (if written) and the last error line of the child's log."""
    summary = read_summary(run_dir)
    text = log_path.read_text(errors="replace").rpartition(RESUMED)[2] if log_path.exists() else ""  # this attempt's
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    errors = [l for l in lines if "error" in l.lower() or "interrupted" in l.lower()]
    if code and code < 0:
        return {"exit_code": code, "summary": summary, "error": f"killed by {signal.Signals(-code).name}"}
    return {"exit_code": code, "summary": summary, "error": (errors or lines or [None])[-1] if code else None}


def start_child(command: list[str], env_extra: dict[str, str], log_path: Path) -> subprocess.Popen:
    """A child that gets SIGTERM if this driver dies (Linux), so no orphan keeps writing a run folder.
    A resumed run appends to its log, below a marker line."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    resumed = "--resume" in command
    with log_path.open("a" if resumed else "w") as log:
        if resumed:
            log.write(f"\n{RESUMED}\n")
            log.flush()
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env_extra},
            preexec_fn=die_with_parent,
        )


def die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_children(children: dict[subprocess.Popen, Any], grace: float = 15.0) -> None:
    """SIGTERM (train saves its state and exits 130), then SIGKILL whatever is left."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run_local(spec: SweepSpec, todo: list, manifest: Manifest, launch: Launch, on_event: EventFn) -> None:
    """Up to `jobs` children at once; a failure stops the others only with fail_fast."""
    jobs = max(1, launch.jobs)
    threads = threads_per_run(launch.threads, jobs, cpu_count())
    program = (sys.executable, "-m", "rnnl2")
    logs = manifest.path.parent / "logs"
    queue, running = list(todo), {}  # Popen → (run, slot)
    try:
        while queue or running:
            free = [s for s in range(jobs) if s not in {slot for _, slot in running.values()}]
            while queue and free:
                run, record = queue.pop(0)
                slot = free.pop(0)
                gpu = launch.gpus[slot % len(launch.gpus)] if launch.gpus else None
                command = train_command(spec, run, program, record["resume"], record.get("pause_after"))
                child = start_child(command, thread_env(threads, gpu), logs / f"{run.name}.log")
                running[child] = (run, slot)
                on_event("start", manifest.update(run.name, status="running", started=time.time(), pid=child.pid))
            time.sleep(POLL_SECONDS)
            for child in [c for c in running if c.poll() is not None]:
                run, _ = running.pop(child)
                record = finish(
                    manifest, run, read_outcome(child.returncode, run.run_dir, logs / f"{run.name}.log"), on_event
                )
                if record["status"] != "done" and launch.fail_fast:
                    queue.clear()
                    stop_children(running)
    except KeyboardInterrupt:
        stop_children(running)
        raise
    finally:
        for child, (run, _) in running.items():
            child.wait()
            finish(manifest, run, read_outcome(child.returncode, run.run_dir, logs / f"{run.name}.log"), on_event)


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
    gpus = 1 if ray.cluster_resources().get("GPU", 0) else 0
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
