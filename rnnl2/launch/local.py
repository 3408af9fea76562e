"""The local backend: up to `jobs` runs at once on this machine, in warm workers (one per slot,
reused from run to run) or, with `--isolate`, one fresh process per run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from .common import (
    POLL_SECONDS,
    Launch,
    cpu_count,
    gpu_for_slot,
    read_outcome,
    start_child,
    stop_processes,
    thread_env,
    threads_per_run,
)
from .job import Job, Journal
from .workers import WarmWorker, wait_readable


def warm_slots(launch: Launch, threads: int, logs: Path) -> "WarmSlots":
    """The launch's warm workers, kept across `execute` calls (a tune runs one per rung)."""
    if launch.pool is None or (launch.pool.threads, launch.pool.logs) != (threads, logs):
        launch.close()
        launch.pool = WarmSlots(threads, launch.gpus, logs)
    return launch.pool


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
    """The default: one warm worker per slot (`rnnl2.launch.workers`), started once and reused; a
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


def run_local(jobs: list[Job], journal: Journal, launch: Launch, folder: Path) -> None:
    """Up to `launch.jobs` runs at once, in warm workers (or fresh processes with `isolate`),
    logging to `folder`/logs; a failure stops the others only with fail_fast."""
    width = max(1, launch.jobs)
    threads = threads_per_run(launch.threads, width, cpu_count())
    logs = folder / "logs"
    slots = IsolatedSlots(threads, launch.gpus) if launch.isolate else warm_slots(launch, threads, logs)
    queue = list(jobs)
    running: dict[int, Job] = {}  # slot → job

    def ended(slot: int, code: int, report: bool = True) -> bool:
        job = running.pop(slot)
        return journal.ended(job, read_outcome(code, job.run_dir, job.log_path), report)

    try:
        while queue or running:
            for slot in [s for s in range(width) if s not in running]:
                if not queue:
                    break
                job = queue.pop(0)
                pid = slots.start(slot, job.argv, job.log_path)
                running[slot] = job
                journal.started(job, pid=pid)
            for slot, code in slots.wait(POLL_SECONDS):
                if not ended(slot, code) and launch.fail_fast:
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
            ended(slot, code, report=not crashed)  # a crash unwinding: recorded, not printed
        if launch.isolate or queue or sys.exc_info()[0] is not None:  # stopped: no worker stays
            slots.close()
            launch.close()
