"""Warm workers: processes that import torch once and then run many `rnnl2 train` commands,
one after another, each exactly as a fresh `rnnl2 train` process would.

Starting Python, importing torch and building the first optimizer (which imports
torch._dynamo) costs seconds per process; a sweep of short runs spent more time there than
training. A worker pays it once. Every run still gets its own folder, log, seed, RNG state and
thread count, and its metrics are bit-identical to `rnnl2 train` alone at the same thread count:
before each run the worker puts back the process-wide state it started with (torch's global
flags and RNGs, environment, signal handlers, warning filters, working folder).

This module is the driver's side; the worker's own loop, which runs the CLI in-process, is
`rnnl2.cli.worker` (so nothing below the CLI imports it).

Protocol: the driver writes one JSON line per run to the worker's stdin (`argv`, `log`,
`resume`, `env`); the worker runs the CLI in-process with stdout and stderr pointed at the run's
log and answers one JSON line, `{"exit_code": N}`, on the pipe that was its stdout. A run that
kills its worker (a segfault, the OOM killer) shows up as end-of-file and the worker's exit code.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESUMED = "--- resumed from checkpoints/last.pt ---"  # marks where a resumed run's log continues


def die_with_parent() -> None:
    """In a child, before exec: SIGTERM when the driver dies (Linux), so no orphan keeps
    writing a run folder."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def open_run_log(log_path: Path, resume: bool):
    """The run's log: a resumed run appends below a marker line, a new one starts the file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("a" if resume else "w")
    if resume:
        log.write(f"\n{RESUMED}\n")
        log.flush()
    return log


# --------------------------------------------------------------------------- driver side


@dataclass(eq=False)
class WarmWorker:
    """One worker process, seen from the driver."""

    process: subprocess.Popen
    buffer: bytes = b""
    replies: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, env_extra: dict[str, str], log_path: Path) -> "WarmWorker":
        """Start `python -m rnnl2.cli.worker`; what it prints outside runs goes to `log_path`."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "rnnl2.cli.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env={**os.environ, **env_extra},
                preexec_fn=die_with_parent,
            )
        return cls(process)

    @property
    def pid(self) -> int:
        return self.process.pid

    def fileno(self) -> int:
        return self.process.stdout.fileno()

    def submit(self, argv: list[str], log_path: Path, resume: bool) -> bool:
        """Hand the worker one run; False when the worker is already gone."""
        line = json.dumps({"argv": argv, "log": str(log_path), "resume": resume}) + "\n"
        try:
            self.process.stdin.write(line.encode())
            self.process.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def read_reply(self) -> int | None:
        """After `select` says the pipe is readable: the finished run's exit code, or the
        worker's own exit code when the pipe closed (the worker died), or None (partial line)."""
        chunk = os.read(self.fileno(), 65536)
        if not chunk:
            return self.process.wait()
        self.buffer += chunk
        if b"\n" not in self.buffer:
            return None
        line, _, self.buffer = self.buffer.partition(b"\n")
        return int(json.loads(line)["exit_code"])

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """No more runs: end-of-file on stdin lets an idle worker exit by itself."""
        try:
            self.process.stdin.close()
        except OSError:
            pass


def wait_readable(workers: list[WarmWorker], timeout: float) -> list[WarmWorker]:
    """The workers with something to read (a reply or end-of-file), waiting up to `timeout`."""
    if not workers:
        return []
    try:
        ready, _, _ = select.select(workers, [], [], timeout)
    except InterruptedError:  # pragma: no cover - Python retries select on EINTR
        return []
    return ready


# --------------------------------------------------------------------------- worker side


@dataclass
class GlobalState:
    """What one run may change for the whole process, captured when the worker starts."""

    environ: dict[str, str]
    cwd: str
    handlers: dict[int, Any]
    warning_filters: list
    showwarning: Any
    python_rng: Any
    torch_rng: Any
    torch_flags: dict[str, Any]

    @classmethod
    def capture(cls) -> "GlobalState":
        import torch

        return cls(
            environ=dict(os.environ),
            cwd=os.getcwd(),
            handlers={s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)},
            warning_filters=list(warnings.filters),
            showwarning=warnings.showwarning,
            python_rng=random.getstate(),
            torch_rng=torch.random.get_rng_state(),
            torch_flags=torch_flags(),
        )

    def restore(self) -> None:
        import torch

        os.environ.clear()
        os.environ.update(self.environ)
        os.chdir(self.cwd)
        for signum, handler in self.handlers.items():
            signal.signal(signum, handler)
        warnings.filters[:] = self.warning_filters
        warnings.showwarning = self.showwarning
        random.setstate(self.python_rng)
        torch.random.set_rng_state(self.torch_rng)
        set_torch_flags(self.torch_flags)


def torch_flags() -> dict[str, Any]:
    """torch's process-wide switches that change numbers or speed."""
    import torch

    return {
        "num_threads": torch.get_num_threads(),
        "default_dtype": torch.get_default_dtype(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "grad_enabled": torch.is_grad_enabled(),
        "anomaly": torch.is_anomaly_enabled(),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_enabled": torch.backends.cudnn.enabled,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cuda_matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
    }


def set_torch_flags(flags: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(flags["num_threads"])
    torch.set_default_dtype(flags["default_dtype"])
    torch.use_deterministic_algorithms(flags["deterministic"], warn_only=flags["deterministic_warn_only"])
    torch.set_grad_enabled(flags["grad_enabled"])
    torch.autograd.set_detect_anomaly(flags["anomaly"])
    torch.set_float32_matmul_precision(flags["matmul_precision"])
    torch.backends.cudnn.enabled = flags["cudnn_enabled"]
    torch.backends.cudnn.benchmark = flags["cudnn_benchmark"]
    torch.backends.cudnn.deterministic = flags["cudnn_deterministic"]
    torch.backends.cuda.matmul.allow_tf32 = flags["cuda_matmul_tf32"]
    torch.backends.cudnn.allow_tf32 = flags["cudnn_tf32"]
