"""Every term added to the loss besides the data loss: which parameters get L2, with which λ,
and the penalty (λ/2)·Σθ² itself."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch
from torch import nn

from .config import GROUPS, L2Config
from .errors import ConfigError, listing, short_repr

# Named groups as globs on RecurrentNet's parameter names. RNN biases are `bias_ih_l0` and
# `bias_hh_l0`, so `weight_*` globs never catch them and `bias` catches both plus the head's.
# With locked dropout every layer is its own module: `rnn.0.weight_ih_l0`, `rnn.1.bias_hh_l0`, ...
GROUP_PATTERNS: dict[str, tuple[str, ...]] = {
    "weight_ih": ("rnn.weight_ih_l*", "rnn.[0-9]*.weight_ih_l*"),
    "weight_hh": ("rnn.weight_hh_l*", "rnn.[0-9]*.weight_hh_l*"),
    "bias": ("rnn.bias_*", "rnn.[0-9]*.bias_*", "head.bias"),
    "embedding": ("embedding.weight",),
    "head": ("head.weight",),
}
assert set(GROUP_PATTERNS) == set(GROUPS)


@dataclass(frozen=True)
class L2Group:
    """Parameters that share one λ."""

    lam: float
    names: tuple[str, ...]
    params: tuple[nn.Parameter, ...]
    label: str = ""
    """The `apply_to` entry that picked these parameters, when `l2.adapt.per_group` splits by it."""


def matches(name: str, selector: str) -> bool:
    """Whether a parameter name is picked by a group name or a glob."""
    return any(fnmatchcase(name, pattern) for pattern in GROUP_PATTERNS.get(selector, (selector,)))


def select_l2_parameters(model: nn.Module, l2: L2Config) -> list[L2Group]:
    """The parameters `l2.apply_to` names, grouped by their λ (`l2.lambdas` overrides `l2.lambda`).

    A glob that matches no parameter is an error (it is almost always a typo); a named group
    the model lacks (`embedding` on feature inputs) simply selects nothing.
    """
    return select_groups(model, l2.apply_to, l2.lambdas, l2.lambda_, "l2", l2.adapt.per_group)


def check_selectors(named: list[tuple[str, nn.Parameter]], selectors: list[str], section: str) -> None:
    """Every selector is a group name or a glob that matches a parameter; the error names `section`."""
    for selector in selectors:
        if selector not in GROUP_PATTERNS and not any(matches(n, selector) for n, _ in named):
            raise ConfigError(
                f"{section}: {short_repr(selector)} matches no parameter; groups are {', '.join(GROUPS)}, "
                f"parameters are {listing([n for n, _ in named], shown=12)}"
            )


def select_groups(
    model: nn.Module,
    apply_to: list[str],
    lambdas: dict[str, float],
    default: float,
    section: str,
    per_group: bool = False,
) -> list[L2Group]:
    """The parameters `apply_to` names, grouped by their coefficient (`lambdas` overrides `default`);
    `l2` and `l1` share it."""
    named = list(model.named_parameters())
    check_selectors(named, [*apply_to, *lambdas], section)
    by_key: dict[tuple[str, float], list[tuple[str, nn.Parameter]]] = {}
    for name, param in named:
        selector = next((s for s in apply_to if matches(name, s)), None)
        if selector is None:
            continue
        lam = next((v for s, v in lambdas.items() if matches(name, s)), default)
        by_key.setdefault((selector if per_group else "", lam), []).append((name, param))
    selectors = [selector for selector, _ in by_key if selector]
    return [
        L2Group(
            lam,
            tuple(n for n, _ in pairs),
            tuple(p for _, p in pairs),
            selector if selectors.count(selector) < 2 else f"{selector}@{lam:g}",  # "" unless per_group
        )
        for (selector, lam), pairs in by_key.items()
    ]


class L2Penalty:
    """(λ/2)·Σθ² over the selected parameters, with one fused norm for all of them, and its
    gradient λ·θ.

    Built once; the per-parameter λ vector lives on the parameters' device, so a call is
    two kernels (foreach norm, weighted sum) whatever the number of tensors. Training adds the
    gradient directly (`add_gradient_`): one fused add per λ instead of a norm, its backward and
    a sum in every step, which on small models cost more in thread hand-offs than in arithmetic.
    """

    def __init__(self, groups: list[L2Group]):
        self.params = [p for g in groups for p in g.params]
        self.set_lambdas(groups)

    def set_lambdas(self, groups: list[L2Group]) -> None:
        """Take each group's current λ (`l2.adapt` changes them during the run)."""
        lams = [g.lam for g in groups for _ in g.params]
        device = self.params[0].device if self.params else torch.device("cpu")
        self.half_lams = torch.tensor(lams, dtype=torch.float32, device=device) * 0.5
        self.penalized = [(g.lam, list(g.params)) for g in groups if g.lam > 0]

    def __call__(self) -> torch.Tensor:
        """The differentiable penalty; zero (no graph) when nothing is selected."""
        if not self.params:
            return torch.zeros((), device=self.half_lams.device)
        norms = torch.stack(torch._foreach_norm(self.params))
        return (self.half_lams * norms.square()).sum()

    @torch.no_grad()
    def add_gradient_(self) -> None:
        """grad += λ·θ for every selected parameter: after `backward()` of the data loss, the
        gradients are exactly those of data loss + (λ/2)·Σθ², before any clipping."""
        for lam, params in self.penalized:
            for param in params:
                if param.grad is None:  # a parameter the data loss did not reach
                    param.grad = torch.zeros_like(param)
            torch._foreach_add_([p.grad for p in params], params, alpha=lam)

    @torch.no_grad()
    def weight_norm(self) -> torch.Tensor:
        """‖θ‖₂ of all selected parameters together (what the penalty shrinks)."""
        if not self.params:
            return torch.zeros(())
        return torch.stack(torch._foreach_norm(self.params)).square().sum().sqrt()


def describe_selection(model: nn.Module, groups: list[L2Group]) -> list[tuple[str, tuple[int, ...], float | None]]:
    """(name, shape, λ or None) for every parameter, in model order, for `config show --params`."""
    lam_of = {name: g.lam for g in groups for name in g.names}
    return [(name, tuple(p.shape), lam_of.get(name)) for name, p in model.named_parameters()]
