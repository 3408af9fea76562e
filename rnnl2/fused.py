"""`sweep --fused`: K runs that differ only in `l2.lambda`, trained in one process as one
block-diagonal model. Every member sees the same batches in the same order (one shuffle), and
each ends in its own ordinary run folder: its metrics rows, summary and checkpoints are the ones
`rnnl2 train` writes, so `eval`, `fork` and `train --resume` take a member like any run.

The wide model and where each member's weights sit are `wide_model`'s. Off-block gradients are
zeroed every step, so no member ever reads another's state; each member's data loss, L2
gradient λ_k·θ_k, gradient norm and clipping are its own. That is the arithmetic of K separate
runs up to the order of float sums (tests/test_fused.py: 1e-5). Early stopping is per member: a
member that stops is finished at once (best checkpoint evaluated, summary written), its block
zeroed, and the others go on.

Why this form: on the CPU every batched form is slower than separate models (benchmarks/
fused_step.py: 3.6–4.5× per step at K = 8; benchmarks/fused_sweep.py: 0.14× the runs per hour of
warm workers), because the wide matmuls do K× the work of the blocks; on a GPU a seed-sized LSTM
uses a sliver of the device, and one wide kernel fills it. Dropout is refused (the members would
share masks), as is what is not one elementwise step of every member: adaptive λ,
L1/AR/TAR/max-norm, fp16/bf16, locked dropout, decoupled decay, a plateau schedule, regression
heads and stateful language models (`fuse_refusal` names which)."""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .config import RunConfig, to_plain_dict
from .errors import ConfigError
from .evaluate import build_loss, evaluate, prefixed
from .optim import build_optimizer, build_scheduler
from .regularization import L2Penalty
from .run_records import epoch_row, naive_baselines, write_summary
from .mlflow_tracking import check_mlflow
from .runs import check_tensorboard, check_writable, create_run_dir, new_run_id, write_config
from .setup import Setup, build_setup
from .state import StopRequest, TrainState, save_checkpoints
from .status import RunStatus
from .tracking import open_run_log
from .train import stop_reason, update_best
from .wide_model import WideNet

FLOAT32_MAX = 3.4028234663852886e38
MAX_MEMBERS = 32
"""The most runs one block-diagonal model holds: its recurrent weights grow as K², so at K = 32
a seed-sized LSTM's are already 32 × the FLOPs of the blocks; larger grids train in groups."""
FUSABLE_KINDS = ("seed_tagging", "sequence_classification", "text_classification")
"""Data whose heads fuse: per-step and pooled classification (regression reshapes its outputs;
text_lm carries its hidden state from batch to batch)."""


def fuse_refusal(cfgs: list[RunConfig]) -> str | None:
    """Why these runs cannot train as one fused model, or None when they can."""
    if len(cfgs) < 2:
        return "fewer than two runs to fuse"
    first = cfgs[0]
    base = without_lambda(first)
    if any(without_lambda(cfg) != base for cfg in cfgs[1:]):
        return "the runs differ in more than l2.lambda"
    m, t, l2 = first.model, first.train, first.l2
    too_big = [lam for cfg in cfgs for lam in (cfg.l2.lambda_, *cfg.l2.lambdas.values()) if lam > FLOAT32_MAX]
    if too_big:
        return f"l2.lambda {too_big[0]:g} is beyond float32 (a run of its own diverges at its first step)"
    if first.data.kind not in FUSABLE_KINDS:
        return f"data.kind {first.data.kind} is not fused (only {', '.join(FUSABLE_KINDS)})"
    reasons = {
        "model.dropout": m.dropout,
        "model.input_dropout": m.input_dropout,
        "model.embedding_dropout": m.embedding_dropout,
        "model.weight_drop": any(first.model.weight_drop_rates()),
        "model.locked_dropout": m.locked_dropout,
        "l2.adapt": l2.adapt.on,
        "l2.mode decoupled": l2.mode == "decoupled",
        "train.precision": t.precision != "fp32",
        "optimizer.scheduler plateau": first.optimizer.scheduler.name == "plateau",
        "l1": first.l1.lambda_ or any(first.l1.lambdas.values()),
        **{f"regularization.{k}": v for k, v in first.regularization.model_dump().items()},
    }
    on = [name for name, value in reasons.items() if value]
    return f"fused members support none of: {', '.join(on)}" if on else None


def without_lambda(cfg: RunConfig) -> dict[str, Any]:
    plain = to_plain_dict(cfg)
    plain["l2"] = {k: v for k, v in plain["l2"].items() if k != "lambda"}
    plain.pop("name", None)
    return plain


@dataclass
class Member:
    """One run of the group: its config, folder, set-up (its own ordinary model, kept in step
    with its block of the wide model at every epoch's end) and training state."""

    cfg: RunConfig
    run_dir: Path
    on_end: Callable[[dict[str, Any]], None]
    """Told the member's outcome (`exit_code`, `summary`, `error`) as soon as it ends."""
    s: Setup = field(init=False)
    state: TrainState = field(init=False)
    optimizer: Any = None
    scheduler: Any = None
    penalty: Any = None
    log: Any = None
    lock: Any = None
    active: bool = True
    alone: bool = False
    """Handed back to train on its own: the group stopped on a loss that was not finite."""


def prepare_members(members: list[Member]) -> None:
    """Refuse what cannot fuse, then build every member's data and model: bad input fails here,
    before any folder is made or any run counts as started."""
    refusal = fuse_refusal([m.cfg for m in members])
    if refusal:
        raise ConfigError(f"sweep --fused: {refusal}")
    for m in members:
        check_writable(m.run_dir.parent)  # what `train.run` checks before it builds anything
        check_tensorboard(m.cfg.output.tensorboard)
        check_mlflow(m.cfg.output.mlflow)
        m.s = build_setup(m.cfg)


def train_fused(members: list[Member]) -> list[Member]:
    """Train prepared members as one wide model to each one's end; every member's outcome goes
    to its `on_end` as soon as it ends. A signal stops all after the current step with a
    checkpoint in every unfinished folder (exit 130 for each; `train --resume` continues one).

    Returns the members to train on their own instead: when a loss turns non-finite its NaN
    reaches every block through the shared kernels, so the group stops, and each unfinished
    member goes on alone from its last checkpoint (or from the start), where the one that
    diverges ends `diverged` as a run of its own does and the others are unharmed."""
    FusedGroup(members).run()
    return [m for m in members if m.alone]


class NotFinite(Exception):
    """A member's loss is not finite: through the shared kernels its NaN reaches every member."""


class FusedGroup:
    """The wide model, its optimizer, and the members' folders while they train."""

    def __init__(self, members: list[Member]):
        self.members, self.started = members, time.perf_counter()
        first = members[0].s
        self.first, self.cfg, self.device, self.K = first, first.cfg, first.device, len(members)
        self.wide = WideNet([m.s.model for m in members], self.cfg).to(self.device)
        self.params = dict(self.wide.named_parameters())
        self.entries = {name: t.to(self.device) for name, t in self.wide.member_entries.items()}
        self.lam_steps = self.lambda_tensors()
        self.coupled = self.cfg.l2.mode == "weight_decay"  # λ·θ inside the step, after clipping
        self.optimizer = build_optimizer(
            self.wide, self.cfg.optimizer, self.cfg.l2.model_copy(update={"mode": "penalty"}), []
        )
        self.scheduler = build_scheduler(self.optimizer, self.cfg.optimizer, self.cfg.train.epochs)
        self.loss_fn = build_loss(first.spec.task)
        self.generator = torch.Generator().manual_seed(self.cfg.seed)  # one shuffle: the same order for all
        for m in members:
            m.state = TrainState(run_id=new_run_id())
            m.run_dir, m.lock = create_run_dir(m.run_dir.parent, m.cfg.name, m.run_dir, m.state.run_id)
            write_config(m.run_dir, m.cfg)
            m.state.started = self.started
            m.optimizer = build_optimizer(m.s.model, m.cfg.optimizer, m.cfg.l2, m.s.groups)
            m.scheduler = build_scheduler(m.optimizer, m.cfg.optimizer, m.cfg.train.epochs)
            m.penalty = L2Penalty(m.s.groups)
            m.log = open_run_log(m.run_dir, m.cfg)

    def lambda_tensors(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """(wide parameter, λ_k on member k's entries where its L2 selection picks it) for every
        parameter some member penalizes: the L2 gradient of all members is one multiply-add each."""
        lam = {name: torch.zeros(p.shape, device=self.device) for name, p in self.params.items()}
        for k, m in enumerate(self.members):
            for group in m.s.groups:
                for name in group.names:
                    lam[name][self.wide.index(name, k)] = group.lam
        return [(self.params[name], lam[name]) for name in self.wide.names if bool(lam[name].any())]

    def run(self) -> None:
        with StopRequest() as stop:
            try:
                for _ in range(self.cfg.train.epochs):
                    if not any(m.active for m in self.members):
                        break
                    self.epoch(stop)
                    if self.scheduler is not None:
                        self.scheduler.step()
                    if stop.signal:
                        raise KeyboardInterrupt
            except NotFinite:
                for m in self.active():  # each continues alone from its last checkpoint (before this epoch)
                    m.log.finish(write_summary(m.run_dir, m.s, m.state, {}, self.started, RunStatus.INTERRUPTED))
                    m.active, m.alone = False, True
                    m.lock.release()
            except KeyboardInterrupt:
                for m in self.active():
                    stop_member(m, self.started, RunStatus.INTERRUPTED, 130, "interrupted")
                raise
            except Exception as error:
                for m in self.active():
                    stop_member(m, self.started, RunStatus.FAILED, 1, f"{type(error).__name__}: {error}")
                raise

    def active(self) -> list[Member]:
        return [m for m in self.members if m.active]

    def epoch(self, stop: StopRequest) -> None:
        """One pass over the training split for every member still training, then each one's row,
        checkpoints and early-stopping decision; a member that ends is finished at once."""
        cfg, K = self.cfg, self.K
        epoch_start = time.perf_counter()
        training = self.active()
        for m in training:  # all hold the same shuffle state; a finished member's is its last epoch's
            m.state.start_epoch(self.device, self.generator)
        done = training[0].state.step - training[0].state.step_in_epoch
        planned = min(
            self.first.train.num_batches(cfg.train.batch_size),
            cfg.train.max_steps - done if cfg.train.max_steps else math.inf,
        )
        loss_sums = torch.zeros(K, device=self.device)
        grad_sums = torch.zeros(K, device=self.device)
        samples = steps = 0
        self.wide.train()
        active = torch.tensor([m.active for m in self.members], device=self.device, dtype=torch.float32)
        for batch in self.first.train.batches(cfg.train.batch_size, self.generator):
            losses, norms = self.step(batch, active)
            size = batch.targets.shape[0]
            loss_sums += losses * size
            grad_sums += norms
            samples, steps = samples + size, steps + 1
            if steps >= planned or stop.signal:
                break
        finite = torch.isfinite(loss_sums).tolist()
        if not all(ok for ok, m in zip(finite, self.members) if m.active):
            raise NotFinite
        for k, m in enumerate(self.members):
            if m.active:
                sync_member(self.wide, k, m, self.optimizer)
                m.state.step, m.state.step_in_epoch, m.state.samples = m.state.step + steps, steps, samples
                m.state.loss_sum, m.state.grad_sum = loss_sums[k].clone(), grad_sums[k].clone()
                m.state.checked_step = m.state.step
        if stop.signal and steps < planned:  # a signal ended the epoch part-way: resumable mid-epoch
            for m in self.active():
                save_checkpoints(m.run_dir, m.s, m.optimizer, m.scheduler, m.state, False)
            raise KeyboardInterrupt
        for k, m in enumerate(self.members):
            if m.active:
                stats = {
                    "train_data_loss": float(loss_sums[k]) / max(samples, 1),
                    "grad_norm": float(grad_sums[k]) / max(steps, 1),
                    "steps": steps,
                    "samples": samples,
                }
                self.end_member_epoch(k, m, stats, epoch_start, stop)

    def step(self, batch: Any, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step of every member (`active`: 1 for a member still training, 0 for one
        that has finished, whose block no longer matters): each member's data loss, and its
        gradient norm before clipping."""
        C, K = self.wide.C, self.K
        outputs = self.wide(batch.inputs, batch.lengths)
        losses = torch.stack([self.loss_fn(outputs[..., k * C : (k + 1) * C], batch.targets) for k in range(K)])
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        with torch.no_grad():
            if not self.coupled:
                for p, lam in self.lam_steps:
                    gradient(p).add_(lam * p)  # the gradient of every member's (λ_k/2)·Σθ², before clipping
            gathered = {name: gradient(p).view(-1)[self.entries[name]] for name, p in self.params.items()}
            norms = (
                torch.stack([g.square().sum(1) for g in gathered.values()]).sum(0).sqrt()
            )  # (K,): a gather and row sums, deterministic on CUDA too
            scale = active
            if self.cfg.train.clip_grad_norm is not None:  # clip_grad_norm_'s coefficient, per member
                scale = scale * (self.cfg.train.clip_grad_norm / (norms + 1e-6)).clamp(max=1.0)
            for name, p in self.params.items():  # member k's entries scaled by its factor, off-block ones to 0
                flat, entries = gradient(p).view(-1), self.entries[name]
                kept = gathered[name] * scale[:, None]
                flat.zero_()
                flat.index_copy_(0, entries.view(-1), kept.view(-1))
            if self.coupled:
                for p, lam in self.lam_steps:
                    gradient(p).add_(lam * p)  # weight_decay=λ: what the optimizer adds in its step
        self.optimizer.step()
        return losses.detach(), norms

    def end_member_epoch(self, k: int, m: Member, stats: dict[str, Any], epoch_start: float, stop: StopRequest) -> None:
        """The epoch's row (validation included), checkpoints and stop decision of one member, as `train` makes them."""
        row = epoch_row(m.s, m.state, stats, m.penalty, m.optimizer, epoch_start)
        if not math.isfinite(row["val_loss"]):
            raise NotFinite
        m.log.append(row)
        if m.scheduler is not None:
            with warnings.catch_warnings():  # the member's optimizer never steps: its lr follows the wide one's
                warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step\\(\\)` before")
                m.scheduler.step()
        improved = update_best(m.state, row, m.s)
        m.state.end_epoch(self.generator)
        save_checkpoints(m.run_dir, m.s, m.optimizer, m.scheduler, m.state, improved)
        status = stop_reason(m.cfg, m.state, stop)
        if status == RunStatus.INTERRUPTED:
            return  # every member stops after this epoch, resumable from its end
        if status != RunStatus.COMPLETED or m.state.epoch >= self.cfg.train.epochs:
            finish_member(m, status, self.started)
            self.retire(k)

    @torch.no_grad()
    def retire(self, k: int) -> None:
        """Zero a finished member's block and its optimizer state: with zero gradients it then stays
        zero (an optimizer's update from zero moments is zero), so nothing it holds can grow into
        an inf or NaN that the shared kernels would carry to the members still training."""
        for name, p in self.params.items():
            index = self.wide.index(name, k)
            p[index] = 0
            for value in self.optimizer.state.get(p, {}).values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    value[index] = 0


def stop_member(m: Member, started: float, status: str, code: int, error: str) -> None:
    """A member that did not finish: its summary says how it stopped, the folder is unlocked, the outcome told."""
    summary = write_summary(m.run_dir, m.s, m.state, {}, started, status)
    m.log.finish(summary)
    m.active = False
    m.lock.release()
    m.on_end({"exit_code": code, "summary": summary, "error": error})


def gradient(p: torch.Tensor) -> torch.Tensor:
    """A wide parameter's gradient: every one takes part in every member's loss, so each has one."""
    assert p.grad is not None
    return p.grad


def sync_member(wide: WideNet, k: int, m: Member, optimizer: torch.optim.Optimizer) -> None:
    """Member k's model and optimizer state from its blocks of the wide ones, in the ordinary format."""
    params = dict(wide.named_parameters())
    with torch.no_grad():
        for name, p in m.s.model.named_parameters():
            p.copy_(params[name][wide.index(name, k)])
    member_params = dict(m.s.model.named_parameters())
    for name, wide_p in params.items():
        state = optimizer.state.get(wide_p)
        if not state:
            continue
        own = {}
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == wide_p.shape:
                own[key] = value[wide.index(name, k)].clone()
            else:
                own[key] = copy.deepcopy(value)
        m.optimizer.state[member_params[name]] = own


def finish_member(m: Member, status: str, started: float) -> None:
    """A member that stopped (early, max_steps) or reached its last epoch: its best weights evaluated
    on val and test, summary.json written, the folder unlocked, its outcome told."""
    if m.state.best_model is not None:
        m.s.model.load_state_dict(m.state.best_model)
    s = m.s
    final = {
        **prefixed("val", evaluate(s.model, s.val, s.spec.task, s.cfg.train.eval_batch_size)),
        **prefixed("test", evaluate(s.model, s.test, s.spec.task, s.cfg.train.eval_batch_size)),
    }
    final |= naive_baselines(s)
    summary = write_summary(m.run_dir, s, m.state, final, started, status)
    m.log.finish(summary)
    m.active = False
    m.lock.release()
    m.on_end({"exit_code": 0, "summary": summary, "error": None})
