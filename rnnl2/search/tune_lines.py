"""What `tune --dry-run` prints, and the header a tune prints before it trains: the rungs (or
intervals, or the trunk and its forks), the brackets, the epoch budget against training every
trial to the end, and the first `rnnl2 train` commands."""

from __future__ import annotations

import shlex
from typing import Any

from .halving import Trial, bracket_budget, keep_count
from .pbt import quantile_count
from .space import grid_params, overrides, params_key, random_params
from .sweep import train_command
from .tune_plan import TunePlan, trial_name


def epoch_budget(plan: TunePlan, jobs: int = 1) -> int:
    """Epochs the whole tune trains when no trial stops early or fails."""
    if plan.pbt:
        return plan.trials * plan.max_epochs
    if plan.late:
        return plan.max_epochs * (1 + plan.refit) + (plan.trials - 1) * plan.fork_epochs
    return sum(bracket_budget(n, plan.rungs[start:], plan.spec.eta) for n, start in plan.brackets(jobs))


def plan_lines(plan: TunePlan, jobs: int = 1) -> list[str]:
    """The rung plan as shell comments: rungs, brackets and the epoch budget against training every
    trial to the end; then the first bracket's `rnnl2 train` commands (tpe: its random start only)."""
    brackets = plan.brackets(jobs)
    budget = epoch_budget(plan, jobs)
    scheduler = f", {plan.spec.scheduler}" if plan.spec.scheduler != "halving" else ""
    lines = [
        f"tune {plan.tune_dir}: {plan.trials} trials ({plan.spec.sampler}{scheduler}), {plan.metric} ({plan.mode})",
        f"rungs at epochs {', '.join(map(str, plan.rungs))} (first: {plan.min_epochs_reason}), eta {plan.spec.eta}",
    ]
    if plan.pbt:
        copies = quantile_count(plan.trials)
        lines[1] = f"intervals end at epochs {', '.join(map(str, plan.rungs))} ({plan.min_epochs_reason})"
        lines.append(f"population {plan.trials}: at each interval the worst {copies} copy one of the best {copies}")
        lines.append(f"{budget} epochs (every member to the end; the copies add none)")
        return [f"# {line}" for line in lines] + first_commands(plan, [size for size, _ in brackets[:1]])
    if plan.late:
        return late_lines(plan, budget)
    flows = []
    for size, start in brackets:
        flow = [size]
        for _ in plan.rungs[start + 1 :]:
            flow.append(keep_count(flow[-1], plan.spec.eta))
        prefix = f"from epoch {plan.rungs[start]}: " if start else ""
        flows.append(prefix + " → ".join(map(str, flow)))
    start = 0
    for end in range(1, len(flows) + 1):  # runs of equal brackets on one line
        if end == len(flows) or flows[end] != flows[start]:
            which = f"bracket {start}" if end - start == 1 else f"brackets {start}–{end - 1}"
            lines.append(f"{which}: {flows[start]} trials{' each' if end - start > 1 else ''}")
            start = end
    grid = plan.trials * plan.max_epochs
    lines.append(f"at most {budget} epochs ({budget / grid:.0%} of {grid} for every trial to the end)")
    return [f"# {line}" for line in lines] + first_commands(plan, [size for size, _ in brackets[:1]])


def first_commands(plan: TunePlan, sizes: list[int]) -> list[str]:
    """The first bracket's train commands (stopping at the first rung); known in advance for
    random and grid, and for tpe's random start (`samplers.STARTUP`)."""
    from .samplers import STARTUP

    size = sizes[0] if sizes else 0
    known = size if plan.spec.sampler != "tpe" else 0 if plan.spec.storage else min(size, STARTUP)  # shared: unseeded
    params: list[dict[str, Any]] = []
    if plan.spec.sampler == "grid":
        params = grid_params(plan.spaces, plan.spec.grid_points)[:known]
    else:
        taken: set[str] = set()
        for number in range(known):
            params.append(random_params(plan.spaces, plan.spec.seed, number, taken))
            taken.add(params_key(params[-1]))
    pause = plan.rungs[0] if len(plan.rungs) > 1 else None
    lines = [
        shlex.join(
            train_command(plan.sweep_spec(), plan.planned_run(Trial(n, trial_name(n, p), p, 0)), pause_after=pause)
        )
        for n, p in enumerate(params)
    ]
    if known < size:
        lines.append(f"# … and {size - known} trials tpe proposes from the results of the ones before")
    return lines


def late_lines(plan: TunePlan, budget: int) -> list[str]:
    """late's plan: the trunk's command, then what each fork (and the refit) does once the
    trunk's best epoch p is known."""
    forks, grid = plan.trials - 1, plan.trials * plan.max_epochs
    params = plan.trunk_params()
    trunk = Trial(0, trial_name(0, params), params, 0)
    keys = " ".join(f"--set {s.key}=…" for s in plan.spaces)
    lines = [
        f"tune {plan.tune_dir}: a trunk and {forks} forks ({plan.spec.sampler}, late), {plan.metric} ({plan.mode})",
        f"the trunk trains the config as given ({', '.join(overrides(params))}) until early stopping ends it "
        f"(patience {plan.definition['trunk_patience']}); p: its best epoch",
        f"each fork: rnnl2 fork TRUNK FORK at p, then train --resume FORK --force {keys} "
        f"--set train.epochs=p+{plan.fork_epochs} (at most {plan.max_epochs})",
    ]
    if plan.refit:
        lines.append(
            f"then the best fork's values from scratch, to epoch {plan.max_epochs} (the earliest fork when none beats the trunk)"
        )
    lines.append(f"at most {budget} epochs ({budget / grid:.0%} of {grid} for every value to the end)")
    return [f"# {line}" for line in lines] + [shlex.join(train_command(plan.sweep_spec(), plan.planned_run(trunk)))]
