"""Optimizer and learning-rate schedule, with L2 placed where `l2.mode` says: in the loss
(penalty), in the optimizer's coupled weight_decay, or as decoupled decay θ ← θ − lr·λ·θ."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .config import L2Config, OptimizerConfig
from .regularization import L2Group


def param_groups(model: nn.Module, groups: list[L2Group], decay: bool) -> list[dict]:
    """One optimizer group per λ (weight_decay=λ when `decay`), plus the unselected rest."""
    selected = {id(p) for g in groups for p in g.params}
    rest = [p for p in model.parameters() if id(p) not in selected]
    out = [{"params": list(g.params), "weight_decay": g.lam if decay else 0.0} for g in groups]
    if rest:
        out.append({"params": rest, "weight_decay": 0.0})
    return out


def build_optimizer(
    model: nn.Module, cfg: OptimizerConfig, l2: L2Config, groups: list[L2Group]
) -> torch.optim.Optimizer:
    """The torch optimizer. weight_decay mode → coupled decay; decoupled mode with adam/adamw →
    AdamW (torch's own); with sgd/rmsprop → `decoupled_decay_` in the loop, weight_decay=0 here."""
    params = param_groups(model, groups, decays_in_optimizer(cfg, l2))
    name = "adamw" if l2.mode == "decoupled" and cfg.name in ("adam", "adamw") else cfg.name
    if name not in OPTIMIZERS:  # the schema's Literal and this table disagree: a bug, never a fallback
        raise ValueError(f"optimizer {cfg.name!r} has no builder in optim.OPTIMIZERS")
    return OPTIMIZERS[name](params, cfg)


def decays_in_optimizer(cfg: OptimizerConfig, l2: L2Config) -> bool:
    """Whether λ lives in the optimizer's groups as weight_decay (coupled, or AdamW's decoupled):
    group i of the optimizer then holds L2Group i's λ."""
    return l2.mode == "weight_decay" or (l2.mode == "decoupled" and cfg.name in ("adam", "adamw"))


OPTIMIZERS: dict[str, Callable[[list[dict], OptimizerConfig], torch.optim.Optimizer]] = {
    "sgd": lambda params, cfg: torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov),
    "adam": lambda params, cfg: torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps),
    "adamw": lambda params, cfg: torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps),
    "rmsprop": lambda params, cfg: torch.optim.RMSprop(
        params, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum
    ),
    "adagrad": lambda params, cfg: torch.optim.Adagrad(params, lr=cfg.lr, eps=cfg.eps),
}
"""One builder per `optimizer.name` the schema allows (tests check the two lists agree)."""


def needs_manual_decoupled_decay(cfg: OptimizerConfig, l2: L2Config) -> bool:
    """sgd and rmsprop have no decoupled decay of their own (SGDW-style), so the loop applies it."""
    return l2.mode == "decoupled" and cfg.name in ("sgd", "rmsprop")


@torch.no_grad()
def decoupled_decay_(optimizer: torch.optim.Optimizer, groups: list[L2Group], kept: torch.Tensor | None = None) -> None:
    """θ ← θ·(1 − lr·λ) before the step, exactly as AdamW orders it; lr follows the schedule. With
    `kept` (fp16's scaler: whether it takes this step) a skipped step decays nothing, as AdamW's."""
    lr = optimizer.param_groups[0]["lr"]
    for group in groups:
        if group.lam:
            factor = 1.0 - lr * group.lam
            if kept is not None:  # a 0-dim tensor: no device sync
                factor = torch.where(kept, factor, 1.0).to(group.params[0].dtype)
            torch._foreach_mul_(list(group.params), factor)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimizerConfig, epochs: int):
    """Epoch-level schedule, or None; plateau watches the validation loss."""
    sched = cfg.scheduler
    if sched.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=sched.step_size, gamma=sched.gamma)
    if sched.name == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=sched.milestones, gamma=sched.gamma)
    if sched.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=sched.min_lr)
    if sched.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=sched.gamma, patience=sched.patience, min_lr=sched.min_lr
        )
    return None
