"""`tune --scheduler late` (docs/search.md, "Late λ"): the trunk (trial 0, the config as given:
λ = 0) trains until its early stopping ends it; every other trial is `rnnl2 fork` of it at its
best epoch p, resumed with its own values to epoch p + --fork-epochs; with refit, the best fork's
values train once more from scratch, so validation chooses between λ from p and λ from the start.

These are steps of the tune driver (`tune.Tuner`, passed in as `tuner`): they add trials, save
them, and train them through its `train`, so a killed driver's rerun continues from the folders
as for every scheduler. A fork's folder is made when its run is about to start (`fork`, called
from `Tuner.prepare`), so one lost or damaged on the way is forked again."""

from __future__ import annotations

import warnings
from typing import Any

from ..errors import Rnnl2Warning
from ..status import ACTIVE, TrialState
from .halving import Trial
from .tune_plan import trial_name


def fork_late(tuner: Any) -> bool:
    """late: the trunk (trial 0, the config as given) trains until its own early stopping
    ends it; every other trial is a fork of it at its best epoch p (`fork.fork_run`: weights,
    optimizer and RNG states, early-stopping state, exactly) trained with its own values to
    epoch p + fork-epochs. True when interrupted."""
    if not tuner.trials:
        add(tuner, from_scratch(0, tuner.plan.trunk_params()))
    trunk = tuner.trials[0]
    if trunk.state in ACTIVE and tuner.train([trunk]):
        return True
    best = trunk.metrics.get("best_epoch")
    if trunk.state != TrialState.COMPLETED or not isinstance(best, int):
        return False  # nothing to fork: the tune ends with the trunk's failure
    until = tuner.plan.fork_until(best)
    if until <= best:
        warnings.warn(
            f"{trunk.name} was still improving at its last epoch ({best}): no fork has epochs left; raise --max-epochs",
            Rnnl2Warning,
            stacklevel=2,
        )
        return False
    while len(tuner.trials) < tuner.plan.trials:
        params, _ = tuner.sampler.propose(len(tuner.trials) - 1, tuner.trials[1:])
        number = len(tuner.trials)
        trial = Trial(number, trial_name(number, params), params, 0, until=until)
        trial.pending = {"from": trunk.name, "epoch": best, "params": params, "donor_params": trunk.params}
        trial.lineage = [*trunk.lineage, {"epoch": best, "params": params, "from": trunk.name}]
        add(tuner, trial)
    todo = [t for t in tuner.trials[1 : tuner.plan.trials] if t.state in ACTIVE]
    if todo and tuner.train(todo):
        return True
    return refit(tuner, trunk)


def refit(tuner: Any, trunk: Trial) -> bool:
    """late with refit: the best fork's values once more, from scratch to max-epochs with the
    config's own early stopping, as one more trial; validation then chooses between λ from
    the fork point and λ from the start. When no fork beats the trunk (each ties it, holding the
    trunk's best), the earliest fork is refit: a tie says nothing about L2 from the first epoch,
    which the refit tests. True when interrupted."""
    planned = tuner.trials[: tuner.plan.trials]  # the trunk and its forks
    if not tuner.plan.refit or any(t.state in ACTIVE for t in planned):
        return False
    if len(tuner.trials) == tuner.plan.trials:
        sign = 1 if tuner.plan.mode == "min" else -1
        done = [t for t in planned[1:] if t.state == TrialState.COMPLETED and t.latest_value() is not None]
        best = min(done, key=lambda t: (sign * (t.latest_value() or 0.0), t.number), default=None)
        if best is None or best.params == trunk.params:  # no fork, or the trunk's own values
            return False
        add(tuner, from_scratch(len(tuner.trials), dict(best.params)))
    again = tuner.trials[tuner.plan.trials]
    return again.state in ACTIVE and tuner.train([again])


def from_scratch(number: int, params: dict[str, Any]) -> Trial:
    """The trunk or the refit: a trial that trains its values from epoch 0."""
    return Trial(number, trial_name(number, params), params, 0, lineage=[{"epoch": 0, "params": params, "from": None}])


def add(tuner: Any, trial: Trial) -> None:
    """A new trial in the tune: planned, in the manifest and saved before anything trains it."""
    tuner.trials.append(trial)
    tuner.runs[trial.name] = tuner.plan.planned_run(trial)
    tuner.manifest.merge(list(tuner.runs.values()))
    tuner.save()


def fork(tuner: Any, trial: Trial) -> str:
    """late: make the trial's folder `rnnl2 fork` of the trunk at the trunk's best epoch (its
    lineage says which and where); the run below resumes it with the trial's own values."""
    from ..fork import fork_run  # its checkpoint checks need torch: only a late tune pays for it

    origin = trial.lineage[-1]
    fork_run(tuner.runs[origin["from"]].run_dir, tuner.runs[trial.name].run_dir, "best")
    trial.epochs = origin["epoch"]
    return "resume"
