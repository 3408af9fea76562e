"""`rnnl2 fork RUN NEW_DIR`: a new run folder that starts where RUN was at its best epoch (or its
last checkpoint), to be continued with other settings by `rnnl2 train --resume NEW_DIR --force
--set …`, while RUN stays as it is.

Why: L2 matters once a model stops fitting. A λ = 0 run's best epoch is where its validation
metric turns; forks of it there, each continued with its own λ, compare the λ values on the part
of training where they differ, for a few epochs each instead of a whole run each (docs/search.md,
"Late λ"). The fork is exact: weights, optimizer state, RNG states, early-stopping state and
metrics are the ones the checkpoint holds (best.pt carries the training state, as last.pt does),
so a fork resumed without changes trains as the source did from that epoch.

The fork keeps the source's run id (its checkpoints carry it) and records its origin in run.json
(`forked_from`). It is built in a hidden sibling and renamed into place: a fork killed on the way
leaves no half-made folder under its name."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

from .checkpoints import CheckpointError, load_checkpoint
from .errors import Rnnl2Error
from .runs import NOT_COPIED, RUN_FILE, FolderLock, MetricsLog, read_json, read_run_id, read_summary, write_json
from .state import check_resume_payload
from .status import RunStatus


def fork_run(source: Path, target: Path, at: Literal["best", "last"] = "best") -> dict[str, Any]:
    """Make `target` a paused copy of `source` as its `at` checkpoint left it; returns what
    run.json records of the origin (source, checkpoint, epoch, step)."""
    if not (source / "config.yaml").is_file() or not (source / RUN_FILE).is_file():
        raise Rnnl2Error(f"{source}: not a run folder (no config.yaml and run.json)")
    if target.exists():
        raise Rnnl2Error(f"{target}: already exists; a fork goes to a new folder")
    if target.resolve().is_relative_to(source.resolve()):
        raise Rnnl2Error(f"{target}: is inside {source}; a fork goes beside the run, not into it")
    with FolderLock(source, shared=True):  # no train --resume writes it while it is copied; other forks may read
        return copy_at(source, target, at)


def copy_at(source: Path, target: Path, at: Literal["best", "last"]) -> dict[str, Any]:
    """The fork itself, with the source locked: checked checkpoint, a hidden copy, then a rename."""
    checkpoint = source / "checkpoints" / f"{at}.pt"
    if not checkpoint.is_file():
        raise CheckpointError(f"{source}: there is no checkpoints/{at}.pt to fork from")
    payload = load_checkpoint(checkpoint)
    if not isinstance(payload.get("resume"), dict):
        raise CheckpointError(
            f"{checkpoint}: holds no training state to continue from (a best.pt written by an "
            "earlier rnnl2 version); fork --at last instead"
        )
    if payload.get("run_id") != read_run_id(source):
        raise CheckpointError(f"{checkpoint}: belongs to another run; it was copied here from elsewhere")
    check_resume_payload(payload)  # the checks `train --resume` makes, before anything is copied
    origin = {"source": str(source), "checkpoint": at, "epoch": payload["epoch"], "step": payload["step"]}
    built = target.with_name(f".{target.name}.fork")
    shutil.rmtree(built, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        build_copy(source, built, checkpoint, payload, origin, target)
    except BaseException:  # a full disk or Ctrl-C on the way: no hidden half-copy is left behind
        shutil.rmtree(built, ignore_errors=True)
        raise
    built.rename(target)
    return origin


def build_copy(
    source: Path, built: Path, checkpoint: Path, payload: dict[str, Any], origin: dict[str, Any], target: Path
) -> None:
    """The copy in its hidden folder: the source's files, the checkpoint as last.pt, the metrics
    and a paused summary that match it, and the origin in run.json."""
    at = origin["checkpoint"]
    shutil.copytree(source, built, ignore=lambda folder, names: [n for n in names if n in NOT_COPIED])
    if at != "last":
        shutil.copyfile(checkpoint, built / "checkpoints" / "last.pt")
    MetricsLog(built).rewrite(list(payload["resume"].get("history") or []))  # the epochs the state has seen
    write_json(built / RUN_FILE, {**read_json(built / RUN_FILE), "forked_from": origin})
    summary = read_summary(source) or {}
    kept: dict[str, Any] = {k: summary[k] for k in ("name", "parameters", "penalized_parameters") if k in summary}
    paused: dict[str, Any] = {**kept, "status": RunStatus.PAUSED.value, "run_dir": str(target)}
    paused |= {"epochs_run": payload["epoch"], "steps": payload["step"], "forked_from": origin}
    write_json(built / "summary.json", paused)
