"""`sweep --fused`: the fresh runs train together in this process as one wide model
(`rnnl2.fused`), each into its own run folder; runs that continue from a checkpoint (a rerun of
a stopped sweep) go to the local backend, one ordinary `rnnl2 train --resume` each."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ..config import load_config
from ..runs import remove_unstarted, set_aside
from .common import Launch, cpu_count, threads_per_run
from .job import Job, Journal
from .local import run_local


def run_fused(jobs: list[Job], journal: Journal, launch: Launch, folder: Path) -> None:
    """The fresh jobs (two or more) in fused groups of at most `MAX_MEMBERS`, one group after
    another; the rest, and every run a group hands back, through `run_local`."""
    import torch

    from ..fused import MAX_MEMBERS, Member, prepare_members, train_fused

    fresh = [job for job in jobs if not job.resume and job.pause_after is None and job.config is not None]
    if len(fresh) < 2:
        fresh = []
    rest = [job for job in jobs if job not in fresh]
    if fresh:
        torch.set_num_threads(threads_per_run(launch.threads, 1, cpu_count()))
    groups = -(-len(fresh) // MAX_MEMBERS)  # ceil: as few groups as the size allows, of equal size ±1
    for group in (fresh[g::groups] for g in range(groups)):
        members = [
            Member(load_config(job.config, list(job.overrides)), job.run_dir, ended_by(journal, job))
            for job in group
            if job.config is not None
        ]
        prepare_members(members)
        for job in group:
            write_log_line(job, f"trained in a fused group of {len(group)} runs by process {os.getpid()}")
            journal.started(job, pid=os.getpid(), fused=len(group))
        alone = {id(m) for m in train_fused(members)}
        for job, member in zip(group, members):
            if id(member) in alone:
                journal.noted(job, fused=None)  # it trains on its own from here
                rest.append(on_its_own(job))
    if rest:
        run_local(rest, journal, launch, folder)


def on_its_own(job: Job) -> Job:
    """A member handed back by the fused group, as a job of its own: resumed from its last
    checkpoint, or (none yet) started again after its folder is set aside."""
    if (job.run_dir / "checkpoints" / "last.pt").exists():
        return replace(job, resume=True)
    write_log_line(job, "the fused group stopped on a loss that was not finite; this run starts again on its own")
    remove_unstarted(job.run_dir)  # nothing trained was kept: the folder goes
    if job.run_dir.exists():  # epochs logged without checkpoints (output.save_checkpoints: false): kept aside
        set_aside(job.run_dir)
    return job


def ended_by(journal: Journal, job: Job) -> Callable[[dict[str, Any]], None]:
    """The member's `on_end`: its outcome recorded in the journal as the job's."""

    def ended(outcome: dict[str, Any]) -> None:
        journal.ended(job, outcome)

    return ended


def write_log_line(job: Job, line: str) -> None:
    job.log_path.parent.mkdir(parents=True, exist_ok=True)
    with job.log_path.open("a", encoding="utf-8") as log:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
