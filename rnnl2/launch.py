"""Run a planned sweep: each run is a separate `python -m rnnl2 train` process, started here
(`--jobs N`, CPU threads split between them, one GPU each), as a Ray task or a SLURM job
(`rnnl2.slurm`); the manifest
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

from .errors import ConfigError, Rnnl2Error
from .runs import FolderLock, read_summary
from .workers import RESUMED, WarmWorker, die_with_parent, open_run_log, wait_readable
from .sweep import (
    Manifest,
    PlannedRun,
    SweepSpec,
    mirror_done_runs,
    reconcile,
    summary_metrics,
    train_command,
    write_definition,
)

EventFn = Callable[[str, dict[str, Any]], None]
POLL_SECONDS = 0.2


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
    pool: "WarmSlots | None" = field(default=None, repr=False, compare=False)
    """The warm workers, kept across `execute` calls (tune runs one per rung) until `close()`."""
    runs_per_gpu: int = 1
    """`--runs-per-gpu K`: K runs share each GPU (local: `jobs` = K per visible GPU; Ray: num_gpus=1/K)."""
    slurm: list[str] = field(default_factory=list)
    """`--slurm KEY=VALUE`s: submitit's job parameters for the slurm backend (see `rnnl2.slurm`)."""

    def warm_slots(self, threads: int, logs: Path) -> "WarmSlots":
        if self.pool is None or (self.pool.threads, self.pool.logs) != (threads, logs):
            self.close()
            self.pool = WarmSlots(threads, self.gpus, logs)
        return self.pool

    def close(self) -> None:
        """End the warm workers (idle ones leave at end-of-file on their stdin)."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def __enter__(self) -> "Launch":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


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
        mirror_done_runs(spec, done)
        for run in done:
            on_event("skip", manifest.record(run.name))
        todo_records = [(run, manifest.record(run.name)) for run, _ in todo]
        result = SweepResult(sweep_dir, manifest.records, skipped=len(done))
        with launch:
            result.interrupted = execute(spec, todo_records, manifest, launch, on_event)
        result.failed = [r for r in manifest.records if r["status"] in ("failed", "interrupted")]
        return result


def execute(spec: SweepSpec, todo: list, manifest: Manifest, launch: Launch, on_event: EventFn) -> bool:
    """Run `todo`, a list of (PlannedRun, manifest record), on the chosen backend; each record's
    `resume` and `pause_after` say how its run starts and where it stops. Returns whether
    Ctrl-C or SIGTERM stopped it (the runs saved their state; a rerun resumes them)."""
    runner = run_ray if launch.backend == "ray" else run_local
    if launch.backend == "slurm":
        from .slurm import run_slurm as runner  # here, so submitit stays out of this module's imports
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


def jobs_for(jobs: int | None, gpus: list[str], runs_per_gpu: int | None, backend: str = "local") -> int:
    """How many runs at once: `--jobs`, else with `--runs-per-gpu K` K on each visible GPU (local
    backend), else 1. More jobs than K per GPU, or K without a GPU, is refused."""
    if runs_per_gpu is None or backend != "local":
        return jobs or 1
    if not gpus:
        raise ConfigError("--runs-per-gpu: no GPU is visible here (CUDA_VISIBLE_DEVICES, nvidia-smi -L)")
    most = len(gpus) * runs_per_gpu
    if jobs is not None and jobs > most:
        raise ConfigError(
            f"--jobs {jobs} with --runs-per-gpu {runs_per_gpu} on {len(gpus)} GPU(s): at most {most} runs at once"
        )
    return jobs or most


def gpu_for_slot(slot: int, gpus: list[str]) -> str | None:
    """The CUDA_VISIBLE_DEVICES of the child in `slot`: round robin, so with jobs = K · len(gpus)
    every GPU serves exactly K slots (and at most K with fewer jobs)."""
    return gpus[slot % len(gpus)] if gpus else None


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


def ignore_event(kind: str, record: dict[str, Any]) -> None:
    """The event sink while a crash unwinds: the records are written, the printer may be the crash."""


def read_outcome(code: int, run_dir: Path, log_path: Path) -> dict[str, Any]:
    """Exit code, summary.json (if written) and the last error line of the child's log."""
    summary = read_summary(run_dir)
    text = log_path.read_text(errors="replace").rpartition(RESUMED)[2] if log_path.exists() else ""  # this attempt's
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    errors = [l for l in lines if "error" in l.lower() or "interrupted" in l.lower()]
    if code and code < 0:
        return {"exit_code": code, "summary": summary, "error": f"killed by {signal.Signals(-code).name}"}
    return {"exit_code": code, "summary": summary, "error": (errors or lines or [None])[-1] if code else None}


def start_child(
    command: list[str], env_extra: dict[str, str], log_path: Path, before_exec: Callable[[], None] = die_with_parent
) -> subprocess.Popen:
    """A child process for one run (`--isolate`, Ray, SLURM), which gets SIGTERM if this driver dies."""
    with open_run_log(log_path, "--resume" in command) as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env_extra},
            preexec_fn=before_exec,
        )


class IsolatedSlots:
    """`--isolate`: a fresh `python -m rnnl2 train` process for every run."""

    def __init__(self, threads: int, gpus: list[str]):
        self.threads, self.gpus = threads, gpus
        self.children: dict[int, subprocess.Popen] = {}

    def start(self, slot: int, command: list[str], log_path: Path) -> int:
        env = thread_env(self.threads, gpu_for_slot(slot, self.gpus))
        self.children[slot] = start_child([sys.executable, "-m", "rnnl2", *command], env, log_path)
        return self.children[slot].pid

    def wait(self, timeout: float) -> list[tuple[int, int]]:
        time.sleep(timeout)
        ended = [(slot, child.returncode) for slot, child in self.children.items() if child.poll() is not None]
        for slot, _ in ended:
            del self.children[slot]
        return ended

    def stop(self) -> None:
        stop_processes(list(self.children.values()))

    def drain(self) -> list[tuple[int, int]]:
        ended = [(slot, child.wait()) for slot, child in self.children.items()]
        self.children.clear()
        return ended

    def close(self) -> None:
        self.drain()


class WarmSlots:
    """The default: one warm worker per slot (`rnnl2.workers`), started once and reused; a
    worker that died (its run crashed it, or was killed) is replaced for the next run."""

    def __init__(self, threads: int, gpus: list[str], logs: Path):
        self.threads, self.gpus, self.logs = threads, gpus, logs
        self.workers: dict[int, WarmWorker] = {}
        self.busy: dict[int, WarmWorker] = {}

    def worker(self, slot: int) -> WarmWorker:
        current = self.workers.get(slot)
        if current is None or not current.alive():
            env = thread_env(self.threads, gpu_for_slot(slot, self.gpus))
            current = self.workers[slot] = WarmWorker.start(env, self.logs / "workers.log")
        return current

    def start(self, slot: int, command: list[str], log_path: Path) -> int:
        argv, resume = [*command, "--threads", str(self.threads)], "--resume" in command
        worker = self.worker(slot)
        if not worker.submit(argv, log_path, resume):
            worker.process.wait()  # it died while idle: a fresh one takes the run
            worker = self.worker(slot)
            worker.submit(argv, log_path, resume)
        self.busy[slot] = worker
        return worker.pid

    def wait(self, timeout: float) -> list[tuple[int, int]]:
        ended = []
        for worker in wait_readable(list(self.busy.values()), timeout):
            code = worker.read_reply()
            if code is not None:
                slot = next(s for s, w in self.busy.items() if w is worker)
                del self.busy[slot]
                ended.append((slot, code))
        return ended

    def stop(self) -> None:
        """SIGTERM to the busy workers (their runs save and stop, as a run of its own would);
        idle ones are closed."""
        for worker in self.workers.values():
            if worker not in self.busy.values():
                worker.close()
        stop_processes([w.process for w in self.busy.values()])

    def drain(self) -> list[tuple[int, int]]:
        """Exit codes of the runs still out, after `stop` (or their workers' when they died)."""
        ended = []
        while self.busy:
            ended += self.wait(POLL_SECONDS)
            for slot, worker in list(self.busy.items()):
                if not worker.alive() and not wait_readable([worker], 0):
                    del self.busy[slot]
                    ended.append((slot, worker.process.returncode))
        return ended

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()
        stop_processes([w.process for w in self.workers.values()])


def stop_processes(processes: list[subprocess.Popen], grace: float = 15.0) -> None:
    """SIGTERM (train saves its state and exits 130), then SIGKILL whatever is left."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_local(spec: SweepSpec, todo: list, manifest: Manifest, launch: Launch, on_event: EventFn) -> None:
    """Up to `jobs` runs at once, in warm workers (or fresh processes with `isolate`); a failure
    stops the others only with fail_fast."""
    jobs = max(1, launch.jobs)
    threads = threads_per_run(launch.threads, jobs, cpu_count())
    logs = manifest.path.parent / "logs"
    slots = IsolatedSlots(threads, launch.gpus) if launch.isolate else launch.warm_slots(threads, logs)
    queue, running = list(todo), {}  # slot → run

    def ended(slot: int, code: int, report: EventFn = on_event) -> dict[str, Any]:
        run = running.pop(slot)
        return finish(manifest, run, read_outcome(code, run.run_dir, logs / f"{run.name}.log"), report)

    try:
        while queue or running:
            for slot in [s for s in range(jobs) if s not in running]:
                if not queue:
                    break
                run, record = queue.pop(0)
                command = train_command(spec, run, (), record["resume"], record.get("pause_after"))
                pid = slots.start(slot, command, logs / f"{run.name}.log")
                running[slot] = run
                on_event("start", manifest.update(run.name, status="running", started=time.time(), pid=pid))
            for slot, code in slots.wait(POLL_SECONDS):
                if ended(slot, code)["status"] != "done" and launch.fail_fast:
                    queue.clear()
                    slots.stop()
    except BaseException as error:  # Ctrl-C, SIGTERM, or a crash of this driver: stop the runs resumably
        slots.stop()
        crashed = not isinstance(error, KeyboardInterrupt)
        raise
    else:
        crashed = False
    finally:
        for slot, code in slots.drain():  # every record closes: none is left "running"
            ended(slot, code, ignore_event if crashed else on_event)
        if launch.isolate or queue or sys.exc_info()[0] is not None:  # stopped: no worker stays
            slots.close()
            launch.close()


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
