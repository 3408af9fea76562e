"""What a run writes about itself: each epoch's metrics row, the naive baselines it is
measured against, and summary.json at its end."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .adapt import LambdaAdapter, lambda_trajectory
from .device import describe_device
from .baselines import build_baselines, data_season
from .evaluate import evaluate, evaluate_baselines, prefixed
from .metrics import reference_baseline
from .models import count_parameters
from .regularization import L2Penalty
from .runs import run_lineage, write_json
from .status import RunStatus
from .state import TrainState


from .setup import Setup


def naive_baselines(s: Setup) -> dict[str, Any]:
    """`baselines`: every naive baseline of the task on val and test, and `baseline`: the one to
    beat (lowest val loss). Evaluated after the model, with no random draws: training is untouched."""
    models = build_baselines(s.spec, s.baseline_fit, data_season(s.cfg.data))
    scores = evaluate_baselines(models, {"val": s.val, "test": s.test}, s.spec.task, s.cfg.train.eval_batch_size)
    return {"baseline": reference_baseline(scores, "val"), "baselines": scores}


def epoch_row(
    s: Setup,
    state: TrainState,
    stats: dict[str, Any],
    penalty: L2Penalty,
    optimizer,
    epoch_start: float,
    adapter: LambdaAdapter | None = None,
) -> dict[str, Any]:
    """Evaluate on the validation split and build the epoch's metrics row (with the current λ when it adapts)."""
    train_seconds = time.perf_counter() - epoch_start
    val = prefixed("val", evaluate(s.model, s.val, s.spec.task, s.cfg.train.eval_batch_size))
    with torch.no_grad():
        pen, norm = penalty().item(), penalty.weight_norm().item()
    others = s.terms.row(state.activity_sum, state.samples)  # penalty_l1, ar, tar: those that are on
    return {
        "epoch": state.epoch + 1,
        "step": state.step,
        "train_data_loss": stats["train_data_loss"],
        "penalty": pen,
        **others,
        "train_loss": stats["train_data_loss"] + pen + sum(others.values()),
        **(adapter.row() if adapter is not None else {}),
        **val,
        "lr": optimizer.param_groups[0]["lr"],
        "weight_norm": norm,
        "grad_norm": stats["grad_norm"],
        "seconds": time.perf_counter() - epoch_start,
        "samples_per_s": stats["samples"] / max(train_seconds, 1e-9),
    }


def write_summary(
    run_dir: Path, s: Setup, state: TrainState, final: dict[str, float], started: float, status: str
) -> dict[str, Any]:
    """summary.json: how the run ended, its best epoch and the best checkpoint's val/test metrics."""
    cfg, history = s.cfg, state.history
    last = history[-1] if history else {}
    elapsed = time.perf_counter() - started
    summary = {
        "status": status,
        "name": cfg.name,
        "run_dir": str(run_dir),
        "best_epoch": state.best_epoch,
        "best_metric": cfg.train.early_stopping.metric,
        "best_value": state.best_value,
        "epochs_run": len(history),
        "steps": state.step,
        **lambda_trajectory(history),
        "final": {k: v for k, v in last.items() if k.startswith(("val_", "train_"))}
        | {"penalty": last.get("penalty")}
        | {k: last[k] for k in ("penalty_l1", "ar", "tar") if k in last},
        **final,
        "data": s.seen,
        "wall_seconds": state.wall_before + elapsed,
        "device": describe_device(s.device),
        "threads": torch.get_num_threads(),
        "precision": cfg.train.precision,
        "deterministic": cfg.train.deterministic,
        "processes": s.ranks.world,
        "parameters": count_parameters(s.model),
        "penalized_parameters": sum(p.numel() for g in s.groups for p in g.params),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "rnnl2": __version__},
    }
    lineage = run_lineage(run_dir)
    if lineage:  # a pbt member: whose weights it took, and its values from each epoch on
        summary["lineage"] = lineage
    if state.resumed_from:  # wall_seconds counts every segment up to its last checkpoint; this one alone:
        summary |= {"resumed_from": state.resumed_from, "wall_seconds_segment": elapsed}
    if status in (RunStatus.INTERRUPTED, RunStatus.PAUSED):
        summary["resume_with"] = f"rnnl2 train --resume {run_dir}"
    if s.ranks.main:
        write_json(run_dir / "summary.json", summary)
    return summary
