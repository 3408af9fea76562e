"""The warm worker's side (`python -m rnnl2.cli.worker`): import torch and the CLI once, then
run each `rnnl2 <argv>` the driver sends in this process, as a fresh process would (the
process-wide state is put back before and after each run; see `rnnl2.launch.workers`, the driver's side)."""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
from pathlib import Path

from ..launch.workers import GlobalState, open_run_log
from . import app


def warm_up() -> None:
    """Import what every run needs, and build one optimizer (its first construction imports
    torch._dynamo, ~2–3 s), so that no run pays for it."""
    import torch

    from .. import resume, train  # noqa: F401

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    gc.collect()
    gc.freeze()  # the imported modules never die: keep them out of every later collection (0.14 s a run)


def run_task(argv: list[str], log_path: Path, resume: bool, baseline: GlobalState) -> int:
    """One `rnnl2 <argv>` in this process, its stdout and stderr in `log_path`; its exit code."""
    baseline.restore()
    sys.stdout.flush()
    sys.stderr.flush()
    saved, streams = (os.dup(1), os.dup(2)), (sys.stdout, sys.stderr)
    log = open_run_log(log_path, resume)
    os.dup2(log.fileno(), 1)  # what C code and child processes write
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log  # what Python writes, whatever sys.stdout was
    try:
        app(args=argv, prog_name="rnnl2", standalone_mode=True)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except KeyboardInterrupt:  # a signal outside the CLI's error boundary
        code = 130
    finally:
        log.flush()
        sys.stdout, sys.stderr = streams
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        log.close()
        baseline.restore()
        gc.collect()
    return code


def serve(requests, replies) -> None:
    """Run requests until end-of-file; a run stopped by a signal (exit 130) ends the worker too:
    the driver is stopping the sweep."""
    baseline = GlobalState.capture()
    for line in requests:
        task = json.loads(line)
        code = run_task(task["argv"], Path(task["log"]), bool(task.get("resume")), baseline)
        replies.write(json.dumps({"exit_code": code}) + "\n")
        replies.flush()
        if code == 130:
            break


def main() -> None:
    """`python -m rnnl2.cli.worker`: keep the pipe to the driver on a private descriptor, send
    anything else printed outside a run to stderr (the workers' log), warm up, serve."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(130))  # idle: just leave
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    try:
        warm_up()
        serve(sys.stdin, replies)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; an idle worker just leaves
        sys.exit(130)


if __name__ == "__main__":
    main()
