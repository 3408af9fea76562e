"""Everything a run builds from its config before its folder exists, so that bad input (a
model too big, a data file that fails) leaves no folder: seed, device, data, model, the L2
selection and the other terms."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .adapt import hold_out
from .config import RunConfig
from .data import DataSpec, Split, build_splits
from .device import resolve_device, use_deterministic
from .distributed import SINGLE, Ranks, check_distributed, current_ranks
from .baselines import fit_baselines
from .memory import count_planned_parameters, is_allocation_error, out_of_memory
from .models import build_model
from .precision import Precision, build_precision
from .regularization import L2Group, select_l2_parameters
from .regularizers import Terms, build_terms


@dataclass(kw_only=True)
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
    holdout: Split | None = None
    """With `l2.adapt` on: the part of the training split held out for the hyper-loss (not in `train`)."""
    seen: dict[str, Any] = field(default_factory=dict)
    """Items per split and their unit (rows and the split rule for row data): summary.json `data`."""
    baseline_fit: dict[str, Any] = field(default_factory=dict)
    """What the naive baselines took from the training split (`baselines.fit_baselines`)."""
    terms: Terms = field(default_factory=Terms)
    """L1, AR/TAR and max-norm (`regularizers`): the terms besides L2, off unless configured."""
    precision: Precision = field(default_factory=Precision)
    """`train.precision`: autocast (and fp16's gradient scaler, saved in last.pt)."""
    ranks: Ranks = SINGLE
    """This process's rank and the world size (several under torchrun)."""


def use_threads(threads: int | None) -> None:
    """`--threads N`: torch's intra-op CPU threads for this process (None keeps torch's choice,
    which follows OMP_NUM_THREADS). Results are bit-identical only at the same thread count."""
    if threads:
        torch.set_num_threads(threads)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    torch.manual_seed(seed)


def build_setup(cfg: RunConfig) -> Setup:
    """Seed, then build data, model and the L2 selection on the run's device."""
    use_deterministic(cfg.train.deterministic)  # before anything starts cuBLAS
    device = resolve_device(cfg.device)
    ranks = current_ranks(device.type)
    check_distributed(ranks, cfg)
    precision = build_precision(cfg.train.precision, device, cfg.model.cell)  # its probe draws before the seed
    seed_everything(cfg.seed)
    splits = build_splits(cfg.data)
    try:
        model = build_model(cfg.model, splits.spec).to(device)
    except (RuntimeError, MemoryError) as error:
        if not is_allocation_error(error):
            raise
        count = count_planned_parameters(lambda: build_model(cfg.model, splits.spec))
        raise out_of_memory(error, count, cfg.optimizer.name, str(device)) from None
    groups = select_l2_parameters(model, cfg.l2)
    train, val, holdout = splits.train.to(device), splits.val.to(device), None
    seen = splits.counts()
    if cfg.l2.adapt.on and cfg.l2.adapt.holdout == "val":
        holdout = val
    elif cfg.l2.adapt.on:  # its own generator: the global RNG (init, dropout) draws as without adapt
        train, holdout = hold_out(train, cfg.l2.adapt.holdout_fraction, cfg.seed)
        seen |= {"train": len(train), "holdout": len(holdout)}
    return Setup(
        cfg=cfg,
        device=device,
        spec=splits.spec,
        train=train,
        val=val,
        test=splits.test.to(device),
        model=model,
        groups=groups,
        holdout=holdout,
        seen=seen,
        baseline_fit=fit_baselines(splits.spec, splits.train),
        terms=build_terms(model, cfg.l1, cfg.regularization),
        precision=precision,
        ranks=ranks,
    )
