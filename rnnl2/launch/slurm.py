"""`--backend slurm`: each run of a sweep (or of a tune rung) a SLURM job, submitted through
submitit (the `slurm` extra) as one job array. A preempted or timed-out job stops its run, which
saves last.pt, and is requeued to resume it exactly; the driver polls the jobs and tells its journal."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from ..errors import INTERRUPTED, ConfigError, Rnnl2Error
from ..run_state import FolderState, folder_state
from ..runs import set_aside
from .common import Launch, read_outcome, start_child, thread_env
from .job import Job, Journal
from .workers import die_with_parent

CLUSTER_ENV = "RNNL2_SLURM_CLUSTER"
"""`local`: submitit's local executor runs the jobs on this machine, to try the backend without SLURM."""
GENERIC_KEYS = {"name", "timeout_min", "mem_gb", "nodes", "cpus_per_task", "gpus_per_node", "tasks_per_node"}
"""submitit's cluster-independent parameters; any other `--slurm` key is a SLURM one (`slurm_<key>`)."""
DEFAULT_TIMEOUT_MIN = 60
POLL_SECONDS = {"slurm": 1.0, "local": 0.2}  # the driver's look at its jobs (submitit rate-limits its sacct calls)
STOP_SECONDS = 60.0  # a stopped run saves within one step; SLURM kills 90 s after its warning signal
PREEMPT_WAIT_SECONDS = 60.0


@dataclass
class SlurmRun:
    """What one job runs: `rnnl2 train` of one run as a child process. The folder decides how it
    starts, as the driver's reconcile did: from its last.pt when it has one (so a requeued job
    continues where its last attempt saved), else fresh; a run that already got to its end is
    only read."""

    fresh: list[str]
    """`rnnl2 train` arguments that start the run (everything after `python -m rnnl2`)."""
    resumed: list[str]
    """The same run, continued from its folder (`train --resume RUN_DIR`)."""
    run_dir: str
    log_path: str
    env: dict[str, str]
    cwd: str
    """The driver's working folder: run and config paths may be relative to it."""
    pause_after: int | None = None
    config_hashes: list[str] = field(default_factory=list)
    """The configs its folder may hold (`run_state.folder_state`); another one is set aside."""
    child: Any = field(default=None, repr=False, compare=False)

    def __call__(self) -> dict[str, Any]:
        os.chdir(self.cwd)
        run_dir, log_path = Path(self.run_dir), Path(self.log_path)
        state = folder_state(run_dir, self.config_hashes, target=self.pause_after).state
        if state in (FolderState.DONE, FolderState.REACHED):  # the job was requeued as its run ended
            return read_outcome(0, run_dir, log_path)
        if state == FolderState.DIVERGED:  # its own end: running it again would diverge again
            return read_outcome(1, run_dir, log_path)
        if state == FolderState.FAILED:  # a killed attempt that saved nothing: kept aside, as reconcile does
            set_aside(run_dir)
        argv = self.resumed if state == FolderState.RESUME else self.fresh
        self.child = start_child([sys.executable, "-m", "rnnl2", *argv], self.env, log_path, prepare_child)
        code = self.child.wait()
        if code == INTERRUPTED and "SLURM_JOB_ID" in os.environ:
            # SLURM signals every process of a preempted job, so the run may have saved and stopped
            # before submitit's requeue signal reached this process: wait for it (→ `checkpoint`).
            time.sleep(PREEMPT_WAIT_SECONDS)
        return read_outcome(code, run_dir, log_path)

    def checkpoint(self) -> Any:
        """submitit calls this in the job on preemption or timeout (its SIGUSR2): stop the run, so it
        saves last.pt, then requeue this same callable, whose next call resumes from it."""
        from submitit.helpers import DelayedSubmission

        if self.child is not None:
            stop_child(self.child.pid)
        self.child = None  # a process handle does not pickle
        return DelayedSubmission(self)


def prepare_child() -> None:
    """In the run's process, before exec: die with the job, and ignore submitit's requeue signal,
    which SLURM sends to every process of the job; the job stops the run itself, with SIGTERM."""
    die_with_parent()
    signal.signal(getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")), signal.SIG_IGN)


def stop_child(pid: int, seconds: float = STOP_SECONDS) -> None:
    """SIGTERM (train saves last.pt and exits 130), then SIGKILL after `seconds`. This runs in a
    signal handler while `SlurmRun.__call__` waits on the same process, so it watches with
    waitid(WNOWAIT), which leaves the exit status to that wait and takes no Popen lock."""
    if not child_running(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + seconds
    while child_running(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = math.inf
        time.sleep(0.05)


def child_running(pid: int) -> bool:
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:  # already reaped
        return False


def job_parameters(options: list[str], threads: int | None, name: str) -> dict[str, Any]:
    """submitit's parameters: `--slurm KEY=VALUE`s (VALUE read as YAML) over rnnl2's defaults, one
    CPU per thread of the run. A generic key passes as is; `partition=gpu` becomes `slurm_partition`."""
    given: dict[str, Any] = {}
    for item in options:
        key, sep, text = (part.strip() for part in item.partition("="))
        if not sep or not key:
            raise ConfigError(f"--slurm {item!r}: expected KEY=VALUE, e.g. partition=gpu or timeout_min=120")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--slurm {item!r}: the value is not valid YAML") from None
        prefixed = key in GENERIC_KEYS or key.split("_")[0] in ("slurm", "local", "debug")
        given[key if prefixed else f"slurm_{key}"] = value
    cpus = given.get("cpus_per_task", threads or 1)
    return {"name": name, "timeout_min": DEFAULT_TIMEOUT_MIN, "cpus_per_task": cpus, **given}


def build_executor(folder: Path, options: list[str], threads: int | None, name: str) -> tuple[Any, int]:
    """The submitit executor (SLURM, or $RNNL2_SLURM_CLUSTER) and the CPU threads of each run."""
    try:
        import submitit
    except ImportError:
        raise Rnnl2Error("--backend slurm needs submitit: pip install 'rnnl2[slurm]'") from None
    cluster = os.environ.get(CLUSTER_ENV) or "slurm"
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise Rnnl2Error(f"--backend slurm: no sbatch here; {CLUSTER_ENV}=local runs the jobs on this machine")
    parameters = job_parameters(options, threads, name)
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    except ValueError as error:
        raise ConfigError(f"{CLUSTER_ENV}={cluster}: {error}") from None
    try:
        executor.update_parameters(**parameters)
    except (NameError, AssertionError, ValueError, TypeError) as error:  # unknown key, wrong type
        raise ConfigError(f"--slurm: {str(error).splitlines()[0]}") from None
    cpus = parameters["cpus_per_task"]
    return executor, threads or (cpus if isinstance(cpus, int) and cpus > 0 else 1)


def slurm_run(job: Job, threads: int) -> SlurmRun:
    extra = ["--threads", str(threads)]
    return SlurmRun(
        fresh=[*job.fresh_argv, *extra],
        resumed=[*job.resumed_argv, *extra],
        run_dir=str(job.run_dir),
        log_path=str(job.log_path),
        env=thread_env(threads),
        cwd=os.getcwd(),
        pause_after=job.pause_after,
        config_hashes=sorted(job.config_hashes),
    )


def run_slurm(jobs: list[Job], journal: Journal, launch: Launch, folder: Path) -> None:
    """Every job one of an array (submitit's folder: `folder`/slurm/); the driver notes each
    job's scheduler state as it changes (`job_state`: PENDING, RUNNING, REQUEUED, …) and how its
    run ended. Ctrl-C cancels the jobs (their runs save; a rerun resumes them)."""
    if not jobs:  # every run already done: nothing to submit, no scheduler needed
        return
    executor, threads = build_executor(folder / "slurm", launch.slurm, launch.threads, f"rnnl2-{folder.name}")
    calls = [slurm_run(job, threads) for job in jobs]
    try:
        with interruptible_children(), executor.batch():
            submitted = [executor.submit(call) for call in calls]
    except RuntimeError as error:  # sbatch refused (submitit's FailedJobError / FailedSubmissionError)
        raise Rnnl2Error(f"cannot submit the jobs: {str(error).strip().splitlines()[-1]}") from None
    pending: dict[str, tuple[Any, Job]] = {}
    states: dict[str, str | None] = {}
    for handle, job in zip(submitted, jobs):
        pending[handle.job_id] = (handle, job)
        states[handle.job_id] = None
        journal.started(job, job_id=handle.job_id, job_state=None)
    try:
        while pending:
            time.sleep(POLL_SECONDS.get(executor.cluster, 1.0))
            for job_id, (handle, job) in list(pending.items()):
                if handle.state != states[job_id]:
                    states[job_id] = handle.state
                    journal.noted(job, job_state=handle.state)
                if handle.done():
                    del pending[job_id]
                    if not journal.ended(job, job_outcome(handle)) and launch.fail_fast:
                        cancel_jobs(pending, journal)
    except KeyboardInterrupt:
        cancel_jobs(pending, journal)
        raise


@contextlib.contextmanager
def interruptible_children() -> Iterator[None]:
    """submitit's local executor cancels a job with SIGINT, which its processes would ignore when
    started from a driver that ignores it (a background job of a script): they get the default."""
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if not ignored or threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def job_outcome(job: Any) -> dict[str, Any]:
    """What the job returned (train's exit code, summary and last error line), or why it returned
    nothing: cancelled, killed, or timed out more often than submitit requeues."""
    try:
        return job.result()
    except Exception as error:  # submitit's UncompletedJobError / FailedJobError
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        return {"exit_code": -1, "error": f"slurm job {job.job_id}: {lines[-1] if lines else type(error).__name__}"}


def cancel_jobs(pending: dict, journal: Journal) -> None:
    for handle, job in pending.values():
        handle.cancel(check=False)
        journal.ended(job, {"exit_code": INTERRUPTED, "error": "interrupted"})
    pending.clear()
