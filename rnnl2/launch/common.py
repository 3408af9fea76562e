"""What every backend shares: how the jobs are launched (`Launch`), threads and GPUs per run, a
child `rnnl2 train` process, and how one run's end is read from its folder and log."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from ..runs import read_summary
from .workers import RESUMED, die_with_parent, open_run_log

POLL_SECONDS = 0.2


@dataclass(kw_only=True)
class Launch:
    """How to run the jobs' processes (a sweep's runs, a tune rung's trials)."""

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
    pool: Any = field(default=None, repr=False, compare=False)
    """The warm workers, kept across `execute` calls (tune runs one per rung) until `close()`."""
    runs_per_gpu: int = 1
    """`--runs-per-gpu K`: K runs share each GPU (local: `jobs` = K per visible GPU; Ray: num_gpus=1/K)."""
    slurm: list[str] = field(default_factory=list)
    """`--slurm KEY=VALUE`s: submitit's job parameters for the slurm backend (see `rnnl2.launch.slurm`)."""
    fused: bool = False
    """`sweep --fused`: the fresh runs that differ only in λ train as one wide model in this process."""

    def close(self) -> None:
        """End the warm workers (idle ones leave at end-of-file on their stdin)."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def __enter__(self) -> "Launch":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


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


def read_outcome(code: int, run_dir: Path, log_path: Path) -> dict[str, Any]:
    """Exit code, summary.json (if written) and the last error line of the child's log."""
    summary = read_summary(run_dir)
    text = log_path.read_text(errors="replace").rpartition(RESUMED)[2] if log_path.exists() else ""  # this attempt's
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    errors = [l for l in lines if "error" in l.lower() or "interrupted" in l.lower()]
    if code and code < 0:
        return {"exit_code": code, "summary": summary, "error": f"killed by {signal.Signals(-code).name}"}
    last = (errors or lines or [""])[-1] or None
    return {"exit_code": code, "summary": summary, "error": last if code else None}


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
