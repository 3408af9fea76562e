"""One experiment end to end: seed, build, train, evaluate, checkpoint, summarise."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable

import torch

from .adapt import LambdaAdapter, build_adapter
from .config import RunConfig
from .device import describe_device
from .distributed import SINGLE, RankLost, Ranks, SilentLog, lost_a_rank
from .errors import Interrupted, RunFailed
from .evaluate import build_loss, evaluate, prefixed
from .memory import is_allocation_error, out_of_memory
from .models import count_parameters
from .observer import Observer
from .optim import build_optimizer, build_scheduler, decoupled_decay_, needs_manual_decoupled_decay
from .regularization import L2Penalty
from .regularizers import describe_terms
from .runs import (
    check_tensorboard,
    check_writable,
    create_run_dir,
    new_run_id,
    read_summary,
    remove_failed,
    remove_unstarted,
    write_config,
    write_json,
)
from .status import RunStatus
from .run_records import epoch_row, naive_baselines, write_summary
from .setup import Setup, build_setup
from .state import StopRequest, TrainState, detach_hidden, restore_training, save_checkpoints
from .mlflow_tracking import check_mlflow
from .tracking import open_run_log

# Steps between reads of the running loss from the device: for the progress bar, and to catch
# a NaN/inf loss or gradient without a device sync on every step.
SYNC_EVERY = 50


class TrainingDiverged(RunFailed):
    """The loss, a gradient or a parameter became NaN or infinite: exit code 1."""


class TrainingInterrupted(Interrupted):
    """Ctrl-C or SIGTERM stopped the run after its state was saved: exit code 130."""

    def __init__(self, run_dir: Path):
        super().__init__(f"the run stopped after saving its state; continue with: rnnl2 train --resume {run_dir}")
        self.run_dir = run_dir


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def train_one_epoch(
    s: Setup,
    optimizer,
    penalty: L2Penalty,
    generator,
    observer: Observer,
    step_budget: float,
    state: TrainState | None = None,
    stop: StopRequest | None = None,
    checkpoint: Callable[[], None] | None = None,
    adapter: LambdaAdapter | None = None,
) -> dict[str, Any]:
    """One pass (or `step_budget` steps) over the training split; sums stay on the device.

    With a `state` part-way through an epoch, the batches already done are skipped (same
    shuffle order). Every `train.checkpoint_every_steps` steps `checkpoint()` saves last.pt;
    a pending `stop` request ends the epoch after the current step. An `adapter` (l2.adapt)
    updates λ after every `every`-th step."""
    cfg, model, terms, precision, ranks = s.cfg, s.model, s.terms, s.precision, s.ranks
    if state is None:
        state = TrainState()
        state.start_epoch(s.device, generator)
    loss_fn = build_loss(s.spec.task)
    add_penalty = cfg.l2.mode == "penalty" and any(g.lam > 0 for g in s.groups)
    manual_decay = needs_manual_decoupled_decay(cfg.optimizer, cfg.l2)
    clip, every = cfg.train.clip_grad_norm, cfg.train.checkpoint_every_steps
    params = list(model.parameters())
    stateful = s.train.stateful
    model.train()
    batches = s.train.batches(cfg.train.batch_size, None if stateful else generator)
    for batch in islice(batches, state.step_in_epoch, None):
        batch, share, size = ranks.shard(batch, s.spec.task)  # one process: the whole batch, share None
        with precision.autocast():  # fp32: no-op
            outputs, hidden = model(batch.inputs, batch.lengths, state.hidden if stateful else None)
            data_loss = loss_fn(outputs, batch.targets)
        state.hidden = detach_hidden(hidden) if stateful else None
        activity = terms.activity(model, batch.lengths)  # [AR, TAR], or None when both are off
        if share is not None:  # this rank's part of the global batch's mean
            data_loss, activity = data_loss * share, None if activity is None else activity * share
        optimizer.zero_grad(set_to_none=True)
        precision.backward(data_loss if activity is None else data_loss + activity.sum())
        if ranks.world > 1 and ranks.reduce_gradients_(params, bool(stop and stop.signal)) and stop is not None:
            stop.signal = stop.signal or "a signal on another rank"  # every rank stops after this step
        precision.unscale_(optimizer)  # fp16: λ·θ and the clip bound apply to the true gradients
        if add_penalty:
            try:
                penalty.add_gradient_()  # the gradient of (λ/2)·Σθ², exactly, before clipping
            except RuntimeError as err:  # a λ beyond the float range (l2.lambda: 1e300)
                if "overflow" not in str(err):
                    raise
                state.step += 1
                raise diverged(state, "the L2 gradient λ·θ is") from None
        terms.add_gradient_()  # L1's λ₁·sign(θ), likewise
        if clip is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        kept = precision.kept(grad_norm)  # fp16: whether the scaler takes this step (inf/NaN: skipped)
        before = adapter.snapshot() if adapter is not None and adapter.due(state.step + 1) else None
        if manual_decay:
            decoupled_decay_(optimizer, s.groups, kept)
        try:
            precision.step(optimizer)
        except RuntimeError as err:  # e.g. Adam's lr / bias correction no longer fits a float
            if "overflow" not in str(err):
                raise
            state.step += 1  # name the step that failed
            raise diverged(state, "an optimizer update is") from None
        terms.constrain_()  # max-norm: rows renormed after the step
        state.loss_sum += data_loss.detach() * size
        if activity is not None:
            state.add_activity(activity.detach() * size)
        state.grad_sum += grad_norm.detach() if kept is None else torch.where(kept, grad_norm.detach(), 0.0)
        state.samples, state.step, state.step_in_epoch = state.samples + size, state.step + 1, state.step_in_epoch + 1
        if before is not None:
            state.adapt = adapter.update(model, before, batch)
        synced = read_running_loss(state, params, ranks) if state.step_in_epoch % SYNC_EVERY == 0 else None
        observer.on_step(state.step_in_epoch, synced)
        if state.step_in_epoch >= step_budget or (stop is not None and stop.signal):
            break
        if checkpoint is not None and every and state.step % every == 0:
            checkpoint()
    ranks.settle_(state)  # rank 0 holds the epoch's sums over all ranks
    loss_sum, grad_sum = read_sums(state)
    return {
        "train_data_loss": loss_sum / max(state.samples, 1),
        "grad_norm": grad_sum / max(state.step_in_epoch, 1),
        "steps": state.step_in_epoch,
        "samples": state.samples,
    }


def read_sums(state: TrainState) -> tuple[float, float]:
    """The epoch's loss and gradient-norm sums, in one read from the device."""
    loss_sum, grad_sum = torch.stack([state.loss_sum, state.grad_sum]).tolist()
    return loss_sum, grad_sum


def read_running_loss(state: TrainState, params: list[torch.Tensor], ranks: Ranks = SINGLE) -> float:
    """The epoch's mean data loss so far, read together with the largest |parameter| in one sync:
    a NaN/inf in the loss, a gradient or a weight since the last read stops the run (every rank
    reads the sum over all ranks, so all of them stop alike)."""
    largest = torch.nn.utils.get_total_norm(params, norm_type=math.inf)  # NaN-propagating, cannot overflow
    sums = torch.stack([state.loss_sum, state.grad_sum, largest.to(state.loss_sum)])
    if ranks.world > 1:  # the gradients and weights are the same on every rank; the loss sums are not
        sums[0] = ranks.total(state.loss_sum)
    loss_sum, grad_sum, weight = sums.tolist()
    if not (math.isfinite(loss_sum) and math.isfinite(grad_sum) and math.isfinite(weight)):
        raise diverged(state)
    state.checked_step = state.step
    return loss_sum / max(state.samples, 1)


def diverged(state: TrainState, what: str = "the loss, a gradient or a weight is") -> TrainingDiverged:
    """The error for a NaN/inf found by a read: names the epoch and the steps since the last good read."""
    first, last = state.checked_step + 1, state.step
    where = f"step {last}" if first >= last else f"steps {first}–{last} (checked every {SYNC_EVERY} steps)"
    if state.saved_at is not None:
        kept = f"checkpoints/last.pt keeps the last finite state, after step {state.saved_at[1]} (epoch {state.saved_at[0]})"
    else:
        kept = "no checkpoint had been written yet"
    return TrainingDiverged(
        f"training diverged in epoch {state.epoch + 1}, {where}: {what} NaN or infinite "
        f"({kept}). Try a lower optimizer.lr, gradient clipping (train.clip_grad_norm: 1.0) or a smaller "
        f"l2.lambda; `rnnl2 train --resume RUN --force --set optimizer.lr=...` continues from the last checkpoint"
    )


def is_better(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if mode == "min" else value > best


def run(
    cfg: RunConfig,
    runs_dir: Path = Path("runs"),
    run_dir: Path | None = None,
    observer: Observer | None = None,
    setup: Setup | None = None,
    pause_after: int | None = None,
) -> RunResult:
    """Train one model from a validated config and write its run folder (locked while it trains).

    With `pause_after` the run stops after that epoch with its state saved (status `paused`);
    `resume` continues it exactly as if it had never stopped (how `tune` halves its trials). A stop (Ctrl-C, SIGTERM) before the first checkpoint removes the folder it had just made:
    nothing was trained, so nothing is lost, and no half-made folder is left behind."""
    started = time.perf_counter()
    check_writable(run_dir.parent if run_dir else runs_dir)
    check_tensorboard(cfg.output.tensorboard)
    check_mlflow(cfg.output.mlflow)
    s = setup or build_setup(cfg)
    state = TrainState(run_id=new_run_id())
    if not s.ranks.main:  # under torchrun: rank 0 makes the folder and writes; the others train beside it
        return train_epochs(s, s.ranks.share(None), state, None, Observer(), started, pause_after)
    run_dir, lock = create_run_dir(runs_dir, cfg.name, run_dir, state.run_id)
    s.ranks.share(run_dir)
    with lock:
        try:
            write_config(run_dir, cfg)
            return train_epochs(s, run_dir, state, None, observer or Observer(), started, pause_after)
        except (KeyboardInterrupt, TrainingInterrupted):
            if not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.jsonl").exists():
                remove_unstarted(run_dir)
                raise KeyboardInterrupt from None
            raise
        except Exception:  # a crash before the first checkpoint: nothing to resume, so no folder is left
            if (read_summary(run_dir) or {}).get("status") == RunStatus.FAILED and not (
                run_dir / "checkpoints" / "last.pt"
            ).exists():
                remove_failed(run_dir)
            raise


def train_epochs(
    s: Setup,
    run_dir: Path,
    state: TrainState,
    payload: dict[str, Any] | None,
    observer: Observer,
    started: float,
    pause_after: int | None = None,
) -> RunResult:
    """Epochs from `state` on: train, evaluate, log, checkpoint, stop early; then the final summary.
    A pause (after epoch `pause_after`) writes a summary without the final evaluation: the
    schedule, the best weights and every RNG state stay in last.pt for the resume."""
    cfg, ranks = s.cfg, s.ranks
    state.started = started
    observer = observer if ranks.main else Observer()
    optimizer = build_optimizer(s.model, cfg.optimizer, cfg.l2, s.groups)
    scheduler = build_scheduler(optimizer, cfg.optimizer, cfg.train.epochs)
    generator = torch.Generator().manual_seed(cfg.seed)
    log = open_run_log(run_dir, cfg) if ranks.main else SilentLog()
    if payload is not None:
        restore_training(payload, optimizer, scheduler, log, state)
        s.precision.load_state_dict(payload.get("scaler"))
        ranks.take_share_(state)
    penalty = L2Penalty(s.groups)
    adapter = build_adapter(
        cfg.l2, cfg.optimizer, s.groups, penalty, optimizer, s.holdout, s.spec.task, cfg.train.batch_size
    )
    if adapter is not None and state.adapt is not None:
        adapter.load_state_dict(state.adapt)
    if adapter is not None:
        adapter.observe(state.history)
    steps_per_epoch = s.train.num_batches(cfg.train.batch_size)
    params = list(s.model.parameters())

    def save(best: bool = False) -> None:
        """Checkpoints of a state read as finite: a NaN/inf weight is never saved (at an epoch's end
        the read before evaluating already covers this step)."""
        if state.checked_step != state.step:
            read_running_loss(state, params, ranks)
        whole = ranks.whole_state(state)  # every rank takes part; rank 0 writes
        if ranks.main:
            save_checkpoints(run_dir, s, optimizer, scheduler, whole, best)
        state.saved_at = whole.saved_at

    observer.on_start(
        {
            "run_dir": run_dir,
            "device": describe_device(s.device),
            "parameters": count_parameters(s.model),
            "l2": describe_terms(s.model, s.groups, s.terms),
            "epochs": cfg.train.epochs,
            "steps_per_epoch": steps_per_epoch,
            "resumed_from": state.resumed_from[-1] if state.resumed_from else None,
            "data": s.seen,
        }
    )
    status = RunStatus.COMPLETED
    with StopRequest() as stop:
        try:
            for epoch in range(state.epoch + 1, cfg.train.epochs + 1):
                epoch_start = time.perf_counter()
                state.start_epoch(s.device, generator)
                done = state.step - state.step_in_epoch
                planned = min(steps_per_epoch, cfg.train.max_steps - done if cfg.train.max_steps else math.inf)
                observer.on_epoch_start(epoch, planned)
                stats = train_one_epoch(
                    s,
                    optimizer,
                    penalty,
                    generator,
                    observer,
                    planned,
                    state,
                    stop,
                    lambda planned=planned: save() if state.step_in_epoch < planned else None,
                    adapter,
                )
                if stop.signal and state.step_in_epoch < planned:  # a signal ended the epoch part-way
                    save()
                    status = RunStatus.INTERRUPTED
                    break
                read_running_loss(state, params, ranks)  # before evaluating: a diverged epoch is not scored
                row = ranks.share(epoch_row(s, state, stats, penalty, optimizer, epoch_start, adapter))  # rank 0's
                if not math.isfinite(row["val_loss"]):  # weights so large the model overflows
                    state.checked_step = state.step - stats["steps"]
                    raise diverged(state, "the validation loss is")
                log.append(row)
                observer.on_epoch_end(row)
                if scheduler is not None:
                    scheduler.step(row["val_loss"]) if cfg.optimizer.scheduler.name == "plateau" else scheduler.step()
                improved = update_best(state, row, s)
                if adapter is not None:
                    adapter.observe(state.history)
                state.end_epoch(generator)
                save(improved)
                status = stop_reason(cfg, state, stop, pause_after)
                if status != RunStatus.COMPLETED:
                    break
        except KeyboardInterrupt:  # a second signal: stop at once; last.pt stays as last saved
            status = RunStatus.INTERRUPTED
        except TrainingDiverged:
            log.finish(write_summary(run_dir, s, state, {}, started, RunStatus.DIVERGED))
            raise
        except Exception as error:  # a crash (a bug, the allocator): close every record it leaves as failed
            if lost_a_rank(error, ranks):  # another rank died: this one stops, resumable from last.pt
                log.finish(write_summary(run_dir, s, state, {}, started, RunStatus.INTERRUPTED))
                raise RankLost(
                    f"another rank of this run stopped; continue with: rnnl2 train --resume {run_dir}"
                ) from None
            summary = write_summary(run_dir, s, state, {}, started, RunStatus.FAILED)
            summary["error"] = f"{type(error).__name__}: {error}".splitlines()[0]
            if state.saved_at is not None:
                summary["resume_with"] = f"rnnl2 train --resume {run_dir}"
            if ranks.main:
                write_json(run_dir / "summary.json", summary)
            log.finish(summary)
            if is_allocation_error(error):
                raise out_of_memory(error, count_parameters(s.model), cfg.optimizer.name, str(s.device)) from None
            raise
    if status == RunStatus.INTERRUPTED:
        log.finish(write_summary(run_dir, s, state, {}, started, status))
        raise TrainingInterrupted(run_dir)
    if status == RunStatus.PAUSED:
        summary = write_summary(run_dir, s, state, {}, started, status)
        log.finish(summary)
        return RunResult(run_dir, summary, state.history)
    if state.best_model is not None:
        s.model.load_state_dict(state.best_model)
    final = {
        **prefixed("val", evaluate(s.model, s.val, s.spec.task, cfg.train.eval_batch_size)),
        **prefixed("test", evaluate(s.model, s.test, s.spec.task, cfg.train.eval_batch_size)),
    }
    final |= naive_baselines(s)
    summary = write_summary(run_dir, s, state, final, started, status)
    log.finish(summary)
    return RunResult(run_dir, summary, state.history)


def update_best(state: TrainState, row: dict[str, Any], s: Setup) -> bool:
    """Record the row; keep a copy of the weights when it is the best so far."""
    stop = s.cfg.train.early_stopping
    state.history.append(row)
    if not is_better(row[stop.metric], state.best_value, stop.mode):
        state.since_best += 1
        return False
    state.best_value, state.best_epoch, state.since_best = row[stop.metric], row["epoch"], 0
    state.best_model = copy.deepcopy(s.model.state_dict())
    return True


def stop_reason(cfg: RunConfig, state: TrainState, stop: StopRequest, pause_after: int | None = None) -> str:
    """Why the run stops after this epoch, or `completed` to go on (and at the end). A pause
    yields to every other reason: a run that early-stops at the pause epoch is finished."""
    if stop.signal:
        return RunStatus.INTERRUPTED
    if cfg.train.early_stopping.patience is not None and state.since_best >= cfg.train.early_stopping.patience:
        return RunStatus.EARLY_STOPPED
    if cfg.train.max_steps is not None and state.step >= cfg.train.max_steps:
        return RunStatus.MAX_STEPS
    if pause_after is not None and pause_after <= state.epoch < cfg.train.epochs:
        return RunStatus.PAUSED
    return RunStatus.COMPLETED
