"""One experiment end to end: seed, build, train, evaluate, checkpoint, summarise."""

from __future__ import annotations

import copy
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .config import ConfigError, Rnnl2Error, RunConfig, to_plain_dict
from .data import DataSpec, Split, build_splits
from .device import describe_device, resolve_device
from .evaluate import HIGHER_IS_BETTER, METRICS, build_loss, evaluate, prefixed
from .models import build_model, count_parameters
from .optim import build_optimizer, build_scheduler, decoupled_decay_, needs_manual_decoupled_decay
from .regularization import L2Group, L2Penalty, describe_selection, select_l2_parameters
from .runs import MetricsLog, check_tensorboard, check_writable, create_run_dir, open_metrics_log, save_checkpoint, write_config, write_json

SYNC_EVERY = 50  # steps between reads of the running loss from the device (for the progress bar)


class TrainingDiverged(Rnnl2Error):
    """The loss or gradient became NaN or infinite."""


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped the run after its state was saved."""


class Observer:
    """Progress callbacks; the CLI supplies one that prints, the default stays silent."""

    def on_start(self, info: dict[str, Any]) -> None: ...
    def on_epoch_start(self, epoch: int, steps: int) -> None: ...
    def on_step(self, step: int, loss: float | None) -> None: ...
    def on_epoch_end(self, row: dict[str, Any]) -> None: ...


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Setup:
    """Everything built from a config before the run folder exists (so bad input leaves none)."""

    cfg: RunConfig
    device: torch.device
    spec: DataSpec
    train: Split
    val: Split
    test: Split
    model: torch.nn.Module
    groups: list[L2Group]


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    torch.manual_seed(seed)


def check_metric(cfg: RunConfig, spec: DataSpec) -> None:
    """The early-stopping metric must be one this task logs, and its direction sensible."""
    names = ["val_" + m for m in METRICS[spec.task]]
    if cfg.train.early_stopping.metric not in names:
        raise ConfigError(
            f"train.early_stopping.metric: {cfg.train.early_stopping.metric!r} is not logged for "
            f"{spec.task} data; choose one of {', '.join(names)}"
        )
    stop = cfg.train.early_stopping
    wanted = "max" if stop.metric.removeprefix("val_") in HIGHER_IS_BETTER else "min"
    if stop.mode != wanted:
        raise ConfigError(f"train.early_stopping.mode: {stop.metric} is better when {'higher' if wanted == 'max' else 'lower'}; set mode: {wanted}")


def build_setup(cfg: RunConfig) -> Setup:
    """Seed, then build data, model and the L2 selection on the run's device."""
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    splits = build_splits(cfg.data)
    check_metric(cfg, splits.spec)
    model = build_model(cfg.model, splits.spec).to(device)
    groups = select_l2_parameters(model, cfg.l2)
    return Setup(
        cfg, device, splits.spec, splits.train.to(device), splits.val.to(device), splits.test.to(device), model, groups
    )


def detach_hidden(hidden):
    if hidden is None:
        return None
    return tuple(h.detach() for h in hidden) if isinstance(hidden, tuple) else hidden.detach()


def train_one_epoch(s: Setup, optimizer, penalty: L2Penalty, generator, observer: Observer, step_budget: int) -> dict[str, Any]:
    """One pass (or `step_budget` steps) over the training split; sums stay on the device."""
    cfg, model = s.cfg, s.model
    loss_fn = build_loss(s.spec.task)
    add_penalty = cfg.l2.mode == "penalty"
    manual_decay = needs_manual_decoupled_decay(cfg.optimizer, cfg.l2)
    clip = cfg.train.clip_grad_norm
    params = [p for p in model.parameters()]
    model.train()
    loss_sum = torch.zeros((), device=s.device)
    grad_sum = torch.zeros((), device=s.device)
    samples, steps, hidden = 0, 0, None
    for batch in s.train.batches(cfg.train.batch_size, None if s.train.stateful else generator):
        outputs, hidden = model(batch.inputs, batch.lengths, hidden if s.train.stateful else None)
        hidden = detach_hidden(hidden) if s.train.stateful else None
        data_loss = loss_fn(outputs, batch.targets)
        loss = data_loss + penalty() if add_penalty else data_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if manual_decay:
            decoupled_decay_(optimizer, s.groups)
        optimizer.step()
        size = batch.targets.shape[0]
        loss_sum += data_loss.detach() * size
        grad_sum += grad_norm.detach()
        samples, steps = samples + size, steps + 1
        synced = loss_sum.item() / samples if steps % SYNC_EVERY == 0 else None
        observer.on_step(steps, synced)
        if steps >= step_budget:
            break
    return {"train_data_loss": loss_sum.item() / max(samples, 1), "grad_norm": grad_sum.item() / max(steps, 1),
            "steps": steps, "samples": samples}


def is_better(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if mode == "min" else value > best


def run(cfg: RunConfig, runs_dir: Path = Path("runs"), run_dir: Path | None = None,
        observer: Observer | None = None, setup: Setup | None = None) -> RunResult:
    """Train one model from a validated config and write its run folder."""
    observer = observer or Observer()
    started = time.perf_counter()
    s = setup or build_setup(cfg)
    check_writable(run_dir.parent if run_dir else runs_dir)
    check_tensorboard(cfg.output.tensorboard)
    run_dir = create_run_dir(runs_dir, cfg.name, run_dir)
    write_config(run_dir, cfg)
    optimizer = build_optimizer(s.model, cfg.optimizer, cfg.l2, s.groups)
    scheduler = build_scheduler(optimizer, cfg.optimizer, cfg.train.epochs)
    penalty = L2Penalty(s.groups)
    generator = torch.Generator().manual_seed(cfg.seed)
    log = open_metrics_log(run_dir, cfg.output.tensorboard)
    stop = cfg.train.early_stopping
    observer.on_start({
        "run_dir": run_dir, "device": describe_device(s.device), "parameters": count_parameters(s.model),
        "l2": describe_selection(s.model, s.groups), "epochs": cfg.train.epochs,
        "steps_per_epoch": s.train.num_batches(cfg.train.batch_size),
    })
    history: list[dict[str, Any]] = []
    best_value, best_epoch, best_state, since_best = None, 0, None, 0
    total_steps, status = 0, "completed"
    try:
        for epoch in range(1, cfg.train.epochs + 1):
            epoch_start = time.perf_counter()
            budget = (cfg.train.max_steps - total_steps) if cfg.train.max_steps else math.inf
            observer.on_epoch_start(epoch, min(s.train.num_batches(cfg.train.batch_size), budget))
            stats = train_one_epoch(s, optimizer, penalty, generator, observer, budget)
            total_steps += stats["steps"]
            train_seconds = time.perf_counter() - epoch_start
            if not math.isfinite(stats["train_data_loss"]) or not math.isfinite(stats["grad_norm"]):
                raise TrainingDiverged(
                    f"training diverged in epoch {epoch} (step {total_steps}): the loss or gradient is "
                    f"NaN/inf; try a lower optimizer.lr or train.clip_grad_norm (e.g. 1.0)"
                )
            val = prefixed("val", evaluate(s.model, s.val, s.spec.task, cfg.train.eval_batch_size))
            with torch.no_grad():
                pen, norm = penalty().item(), penalty.weight_norm().item()
            row = {
                "epoch": epoch, "step": total_steps, "train_data_loss": stats["train_data_loss"],
                "penalty": pen, "train_loss": stats["train_data_loss"] + pen, **val,
                "lr": optimizer.param_groups[0]["lr"], "weight_norm": norm, "grad_norm": stats["grad_norm"],
                "seconds": time.perf_counter() - epoch_start,
                "samples_per_s": stats["samples"] / max(train_seconds, 1e-9),
            }
            history.append(row)
            log.append(row)
            observer.on_epoch_end(row)
            if scheduler is not None:
                scheduler.step(val["val_loss"]) if cfg.optimizer.scheduler.name == "plateau" else scheduler.step()
            improved = is_better(row[stop.metric], best_value, stop.mode)
            if improved:
                best_value, best_epoch, since_best = row[stop.metric], epoch, 0
                best_state = copy.deepcopy(s.model.state_dict())
            else:
                since_best += 1
            if cfg.output.save_checkpoints:
                payload = checkpoint_payload(cfg, s, optimizer, scheduler, epoch, total_steps, row)
                save_checkpoint(run_dir / "checkpoints" / "last.pt", payload)
                if improved:
                    save_checkpoint(run_dir / "checkpoints" / "best.pt", payload)
            if stop.patience is not None and since_best >= stop.patience:
                status = "early_stopped"
                break
            if cfg.train.max_steps is not None and total_steps >= cfg.train.max_steps:
                status = "max_steps"
                break
    except KeyboardInterrupt:
        write_summary(run_dir, cfg, s, history, best_epoch, best_value, {}, started, "interrupted")
        raise TrainingInterrupted(str(run_dir)) from None
    except TrainingDiverged:
        write_summary(run_dir, cfg, s, history, best_epoch, best_value, {}, started, "diverged")
        raise
    if best_state is not None:
        s.model.load_state_dict(best_state)
    final = {
        **prefixed("val", evaluate(s.model, s.val, s.spec.task, cfg.train.eval_batch_size)),
        **prefixed("test", evaluate(s.model, s.test, s.spec.task, cfg.train.eval_batch_size)),
    }
    summary = write_summary(run_dir, cfg, s, history, best_epoch, best_value, final, started, status)
    return RunResult(run_dir, summary, history)


def checkpoint_payload(cfg: RunConfig, s: Setup, optimizer, scheduler, epoch: int, step: int, row: dict) -> dict[str, Any]:
    """Plain dicts and tensors only, so `torch.load(weights_only=True)` can read it."""
    return {
        "config": to_plain_dict(cfg),
        "data_spec": s.spec.to_dict(),
        "model": s.model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": epoch,
        "step": step,
        "metrics": row,
        "rnnl2_version": __version__,
    }


def write_summary(run_dir: Path, cfg: RunConfig, s: Setup, history: list[dict], best_epoch: int,
                  best_value: float | None, final: dict[str, float], started: float, status: str) -> dict[str, Any]:
    """summary.json: how the run ended, its best epoch and the best checkpoint's val/test metrics."""
    last = history[-1] if history else {}
    summary = {
        "status": status,
        "name": cfg.name,
        "run_dir": str(run_dir),
        "best_epoch": best_epoch,
        "best_metric": cfg.train.early_stopping.metric,
        "best_value": best_value,
        "epochs_run": len(history),
        "steps": last.get("step", 0),
        "final": {k: v for k, v in last.items() if k.startswith(("val_", "train_"))} | {"penalty": last.get("penalty")},
        **final,
        "wall_seconds": time.perf_counter() - started,
        "device": describe_device(s.device),
        "parameters": count_parameters(s.model),
        "penalized_parameters": sum(p.numel() for g in s.groups for p in g.params),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "rnnl2": __version__},
    }
    write_json(run_dir / "summary.json", summary)
    return summary
