"""Successive halving for `tune`, as pure logic: the rung epochs, each trial's record, and the
rung decisions of one bracket. Training is a function passed in, so tests drive it with a stub.

    rungs 1, 3, 9, 15 (min-epochs 1, eta 3, max-epochs 15), a bracket of 9 trials:
    rung 0: 9 trials train to epoch 1  → the best 3 resume,  6 stop
    rung 1: 3 trials train to epoch 3  → the best 1 resumes, 2 stop
    rung 2: 1 trial  trains to epoch 9 → it resumes
    rung 3: 1 trial  trains to epoch 15 (the end: test metrics) → completed

Every bracket is synchronous: a rung is decided once all its trials have reached it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

from ..errors import ConfigError
from ..status import ACTIVE, TrialState

STATES = tuple(TrialState)


@dataclass
class Trial:
    """One trial: its parameters, where it stands, and its metric at every rung it reached."""

    number: int
    name: str
    params: dict[str, Any]
    bracket: int
    rung: int = 0
    """Index of the rung it is admitted to: it trains to rungs[rung] (the last: to the end)."""
    state: str = TrialState.PENDING
    """pending, running, paused (at its rung, waiting for the decision), promoted (admitted to the
    next rung, not yet resumed), stopped (not promoted), completed, failed."""
    values: dict[int, float | None] = field(default_factory=dict)
    """Rung epoch → the validation metric's best value up to that epoch (None: it failed)."""
    epochs: int = 0
    """Epochs trained so far."""
    seconds: float = 0.0
    """Training wall time, every resumed segment included (its summary's wall_seconds)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """A completed trial's best-checkpoint val_*/test_* metrics."""
    error: str | None = None
    optuna: dict[str, int] | None = None
    """The Optuna trial (`number`, `id`) when the sampler is tpe."""
    lineage: list[dict[str, Any]] = field(default_factory=list)
    """pbt: `{epoch, params, from}` for its start and every copy: the values it trained with
    from each epoch on, and whose weights it took then (`pbt.decide`)."""
    pending: dict[str, Any] | None = None
    """pbt: a copy decided and not yet trained on: `{from, epoch, params, donor_params}`, plus
    `copied` once the folder is in place; cleared when the trial reaches its next interval."""
    until: int | None = None
    """late: a fork's own train.epochs (the trunk's best epoch + --fork-epochs); None: max-epochs."""

    def latest_value(self) -> float | None:
        """Its metric at the last rung it reached (a completed trial's: its best over all its
        epochs, what it is chosen by); None when that is not a finite number."""
        return finite(self.values[max(self.values)]) if self.values else None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "values": {str(k): v for k, v in self.values.items()}}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "Trial":
        known = {f.name for f in fields(cls)}  # trials.json also carries run_dir, for readers
        return cls(
            **{k: v for k, v in raw.items() if k in known} | {"values": {int(k): v for k, v in raw["values"].items()}}
        )


def finite(value: Any) -> float | None:
    """A finite number as a float; None for anything else (a failed trial's None, NaN, text)."""
    good = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if good else None


def rung_epochs(min_epochs: int, max_epochs: int, eta: int) -> list[int]:
    """min·eta^k while below max, then max itself: the epochs where trials are compared."""
    if min_epochs > max_epochs:
        raise ConfigError(f"--min-epochs {min_epochs} is above --max-epochs {max_epochs}")
    rungs, epoch = [], min_epochs
    while epoch < max_epochs:
        rungs.append(epoch)
        epoch *= eta
    return [*rungs, max_epochs]


def first_decay(scheduler: Any) -> int | None:
    """The last epoch before the learning rate first drops: multistep's first milestone, step's
    step_size; None for schedules without a fixed first decay."""
    if scheduler.name == "multistep" and scheduler.milestones:
        return scheduler.milestones[0]
    if scheduler.name == "step":
        return scheduler.step_size
    return None


def default_min_epochs(scheduler: Any, max_epochs: int, eta: int) -> tuple[int, str]:
    """The first rung, and why: one epoch past the first decay when the schedule has one (a
    comparison before it misleads: on PTB λ = 1e-5 trails λ = 0 until then, and wins by 8
    perplexity points after), else max-epochs ÷ eta², at least 1."""
    decay = first_decay(scheduler)
    if decay is not None:
        return min(decay + 1, max_epochs), f"the first epoch after the first learning-rate decay (epoch {decay})"
    return max(1, max_epochs // eta**2), f"max-epochs {max_epochs} ÷ eta² ({eta**2})"


def keep_count(entrants: int, eta: int) -> int:
    """How many of a rung's trials go on: ⌊n / eta⌋, at least one."""
    return max(1, entrants // eta)


def bracket_budget(size: int, rungs: list[int], eta: int) -> int:
    """Epochs a bracket of `size` trials trains when none stops early or fails."""
    total, entrants, previous = 0, size, 0
    for epoch in rungs:
        total += entrants * (epoch - previous)
        entrants, previous = keep_count(entrants, eta), epoch
    return total


def rank(trials: list[Trial], epoch: int, mode: str) -> list[Trial]:
    """Best first by the value at `epoch`; a failed trial (no finite value) last; ties by number."""
    sign = 1 if mode == "min" else -1

    def key(trial: Trial) -> tuple:
        value = finite(trial.values.get(epoch))
        return (value is None, sign * value if value is not None else 0.0, trial.number)

    return sorted(trials, key=key)


def decide(bracket: list[Trial], k: int, rungs: list[int], eta: int, mode: str) -> list[tuple[str, Trial]]:
    """Decide rung k: of the n trials that entered it, the best ⌊n/eta⌋ (at least one, never a
    failed one) go on; those paused there are promoted to rung k+1, the other paused ones stop.
    A trial that finished by its own rules (early stopping) needs nothing. Deciding again
    changes nothing, so a resumed tune can call it freely."""
    entrants = [t for t in bracket if t.rung >= k]
    ranked = rank(entrants, rungs[k], mode)
    keep = {t.number for t in ranked[: keep_count(len(entrants), eta)] if t.values.get(rungs[k]) is not None}
    events = []
    for trial in entrants:
        if trial.state == TrialState.PAUSED and trial.rung == k:
            if trial.number in keep:
                trial.rung, trial.state = k + 1, TrialState.PROMOTED
                events.append(("promoted", trial))
            else:
                trial.state = TrialState.STOPPED
                events.append(("stopped", trial))
    return events


TrainFn = Callable[[list[Trial]], bool]
"""Train each trial to rungs[trial.rung] and record where it got (paused, completed or failed,
with its value there); return True when interrupted."""


def run_bracket(
    bracket: list[Trial],
    rungs: list[int],
    eta: int,
    mode: str,
    train: TrainFn,
    decided: Callable[[list[tuple[str, Trial]]], None] = lambda events: None,
) -> bool:
    """Successive halving of one bracket from wherever its trials stand; returns True when
    interrupted (the trials keep their state, and running it again continues)."""
    for k in range(len(rungs)):
        todo = [t for t in bracket if t.rung == k and t.state in ACTIVE]
        if todo and train(todo):
            return True
        if k + 1 < len(rungs):
            decided(decide(bracket, k, rungs, eta, mode))
    return False


def bracket_sizes(total: int, sampler: str, rungs: list[int], eta: int, jobs: int) -> list[int]:
    """How `total` new trials split into brackets: random and grid take one bracket of all; tpe
    samples in waves of max(eta^(rungs−1), jobs), so each wave learns from the ones before."""
    if total <= 0:
        return []
    if sampler != "tpe":
        return [total]
    wave = max(eta ** (len(rungs) - 1), jobs, 1)
    return [min(wave, total - start) for start in range(0, total, wave)]


def hyperband_sizes(total: int, rungs: list[int], eta: int) -> list[int]:
    """Hyperband's brackets (Li et al. 2018) for `total` trials: bracket j starts at rung j, so
    bracket 0 halves from the first rung and the last one trains every trial to the end: a
    bracket that never trusts an early rung. Sizes follow ⌈(S+1)/(S−j+1)·eta^(S−j)⌉ (S: the
    last rung's index; each bracket then costs about the same), scaled to `total`, at least one."""
    last = len(rungs) - 1
    weights = [math.ceil((last + 1) / (last - j + 1) * eta ** (last - j)) for j in range(last + 1)]
    if total <= len(weights):
        return [1] * total
    shares = [total * w / sum(weights) for w in weights]
    sizes = [max(1, math.floor(x)) for x in shares]
    by_remainder = sorted(range(len(sizes)), key=lambda j: (sizes[j] - shares[j], j))
    for j in by_remainder[: total - sum(sizes)]:
        sizes[j] += 1
    while sum(sizes) > total:  # the floors of one (max) overshot: take from the largest
        sizes[sizes.index(max(sizes))] -= 1
    return sizes
