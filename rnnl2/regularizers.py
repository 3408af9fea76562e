"""The terms beside L2 (issue 12): L1 (elastic net with L2), AR and TAR on the last layer's
activations, and the max-norm constraint; built once from the config into `Terms`, which the
loop calls at three fixed points (after the forward, after backward, after the step)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import L1Config, RegularizationConfig
from .regularization import L2Group, check_selectors, matches, select_groups


class L1Penalty:
    """λ₁·Σ|θ| over the selected parameters, and its gradient λ₁·sign(θ) (0 at θ = 0)."""

    def __init__(self, groups: list[L2Group]):
        self.groups = [(g.lam, list(g.params)) for g in groups if g.lam > 0]

    def __call__(self) -> torch.Tensor:
        """The value, for the metrics row."""
        parts = [lam * torch.stack(torch._foreach_norm(params, 1)).sum() for lam, params in self.groups]
        return torch.stack(parts).sum() if parts else torch.zeros(())

    @torch.no_grad()
    def add_gradient_(self) -> None:
        """grad += λ₁·sign(θ): after `backward()` of the data loss, the (sub)gradient of the total."""
        for lam, params in self.groups:
            for param in params:
                if param.grad is None:  # a parameter the data loss did not reach
                    param.grad = torch.zeros_like(param)
            torch._foreach_add_([p.grad for p in params], torch._foreach_sign(params), alpha=lam)


def activity_terms(
    dropped: torch.Tensor, steps: torch.Tensor, lengths: torch.Tensor | None, ar: float, tar: float
) -> torch.Tensor:
    """[α·mean(h²) over `dropped`, β·mean((h_t − h_{t−1})²) over `steps`], both over valid steps.

    `dropped` and `steps` are (batch, time, features); a sequence of length n has valid steps
    0…n−1 and valid pairs (t−1, t) for t = 1…n−1. Padded steps count in neither mean."""
    batch, time, features = steps.shape
    if lengths is None:
        valid = torch.ones(batch, time, dtype=torch.bool, device=steps.device)
    else:
        valid = torch.arange(time, device=steps.device)[None, :] < lengths.to(steps.device)[:, None]
    zero = steps.new_zeros(())
    ar_term = zero
    if ar:
        ar_term = ar * dropped.square().sum(-1)[valid].sum() / (valid.sum() * features)
    tar_term = zero
    if tar and time > 1:
        pairs = valid[:, 1:]  # step t valid ⇒ step t − 1 valid
        change = (steps[:, 1:] - steps[:, :-1]).square().sum(-1)[pairs].sum()
        tar_term = tar * change / (pairs.sum().clamp(min=1) * features)
    return torch.stack([ar_term, tar_term])


class MaxNorm:
    """Rows of the selected parameters renormed to a Euclidean norm ≤ c after every step."""

    def __init__(self, params: list[nn.Parameter], value: float):
        self.params, self.value = params, value

    @torch.no_grad()
    def constrain_(self) -> None:
        for param in self.params:
            param.renorm_(2, 0, self.value)  # dim 0: one row (one unit's incoming weights) at a time


@dataclass
class Terms:
    """Every term besides L2; each part is None (or 0) when off, and then costs nothing."""

    l1: L1Penalty | None = None
    l1_groups: tuple[L2Group, ...] = ()
    ar: float = 0.0
    tar: float = 0.0
    max_norm: MaxNorm | None = None

    def activity(self, model: nn.Module, lengths: torch.Tensor | None) -> torch.Tensor | None:
        """[AR, TAR] of the forward just run (the model kept its last layer's outputs), or None."""
        if not (self.ar or self.tar):
            return None
        dropped, steps = model.activations
        model.activations = None
        return activity_terms(dropped, steps, lengths, self.ar, self.tar)

    def add_gradient_(self) -> None:
        """L1's gradient, exactly, before clipping."""
        if self.l1 is not None:
            self.l1.add_gradient_()

    def constrain_(self) -> None:
        """Max-norm, after the optimizer step (and any decoupled decay)."""
        if self.max_norm is not None:
            self.max_norm.constrain_()

    def row(self, activity_sum: torch.Tensor | None, samples: int) -> dict[str, float]:
        """`penalty_l1` (at the current weights), `ar` and `tar` (the epoch's means), those that are on."""
        out: dict[str, float] = {}
        if self.l1 is not None:
            with torch.no_grad():
                out["penalty_l1"] = self.l1().item()
        if self.ar or self.tar:
            means = (activity_sum / max(samples, 1)).tolist() if activity_sum is not None else [0.0, 0.0]
            out |= {name: value for name, value, coef in zip(("ar", "tar"), means, (self.ar, self.tar)) if coef}
        return out


def build_terms(model: nn.Module, l1: L1Config, reg: RegularizationConfig) -> Terms:
    """The terms the config turns on, with their parameters selected once; tells the model to keep
    its last layer's outputs when AR or TAR needs them."""
    groups = select_groups(model, l1.apply_to, l1.lambdas, l1.lambda_, "l1")
    max_norm = None
    if reg.max_norm is not None:
        named = list(model.named_parameters())
        check_selectors(named, reg.max_norm.apply_to, "regularization.max_norm")
        params = [p for n, p in named if any(matches(n, s) for s in reg.max_norm.apply_to)]
        max_norm = MaxNorm(params, reg.max_norm.value)
    model.keep_activations = bool(reg.ar or reg.tar)
    return Terms(L1Penalty(groups) if l1.on else None, tuple(groups), reg.ar, reg.tar, max_norm)


def describe_terms(model: nn.Module, l2_groups: list[L2Group], terms: Terms):
    """(columns, rows) for `config show --params`: every parameter with its λ, and its λ₁, max-norm c
    and weight-drop p where those terms are on (None where a term skips the parameter)."""
    lam = {name: g.lam for g in l2_groups for name in g.names}
    columns: dict[str, dict[str, float]] = {"λ": lam}
    if terms.l1 is not None:
        columns["λ₁"] = {name: g.lam for g in terms.l1_groups for name in g.names}
    if terms.max_norm is not None:
        ids = {id(p) for p in terms.max_norm.params}
        columns["max-norm"] = {n: terms.max_norm.value for n, p in model.named_parameters() if id(p) in ids}
    drop = model.weight_drop_by_name() if hasattr(model, "weight_drop_by_name") else {}
    if drop:
        columns["weight-drop"] = drop
    rows = [
        (name, tuple(p.shape), [values.get(name) for values in columns.values()])
        for name, p in model.named_parameters()
    ]
    return list(columns), rows
