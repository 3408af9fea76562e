"""Planning a `tune`: the spaces checked against the config, the rungs, the folder and its
definition (`tune.json`), and every trial as a sweep's `PlannedRun`. Running it lives in `tune.py`.

    runs/<name>/tune-<hash>/     tune.json (the definition)  trials.json, trials.csv (every trial)
        trial-0000-l2.lambda=0/  an ordinary run folder, paused at a rung or finished
        sweep.jsonl, logs/       the manifest and logs a sweep keeps too, as for a sweep
        study.journal            the Optuna study (--sampler tpe without --storage)
        best.yaml, selection.json, figures/rung-<epochs>.png
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

from ..compare import flatten
from ..config import load_config, to_plain_dict
from ..errors import ConfigError, Rnnl2Error
from ..metrics import default_mode
from ..run_state import config_hash
from ..runs import read_json, read_summary, write_json
from ..status import FINISHED
from .grid import MAX_RUNS, format_value
from .halving import (
    Trial,
    bracket_sizes,
    default_min_epochs,
    hyperband_sizes,
    rung_epochs,
)
from .manifest import PlannedRun
from .pbt import interval_epochs
from .space import Space, grid_size, overrides, parse_spaces
from .sweep import SweepSpec, slug

SAMPLERS = ("random", "grid", "tpe")
SCHEDULERS = ("halving", "hyperband", "pbt", "late")
LATE_PATIENCE = 2
"""late: the trunk stops this many epochs past its best (a fork that never beats it, as many after the fork)."""
COMPARED = (
    "config_hash",
    "set",
    "spaces",
    "sampler",
    "seed",
    "eta",
    "rungs",
    "grid_points",
    "scheduler",
    "perturb_epochs",
    "population",
    "fork_epochs",
    "trunk_patience",
    "refit",
)
"""Definition entries that must match for a tune folder to continue (`trials` may grow)."""


@dataclass
class TuneSpec:
    """What to tune: a base config, the spaces, the sampler and the halving schedule."""

    config: Path
    spaces: list[str]
    """`KEY=SPEC` texts, as `--space` takes them."""
    _: KW_ONLY
    fixed: list[str] = field(default_factory=list)
    """`--set` overrides applied to every trial, before its sampled ones."""
    sampler: str = "random"
    trials: int | None = None
    """Trials in all; grid: its number of points (None: all of them)."""
    seed: int = 0
    eta: int = 3
    min_epochs: int | None = None
    """The first rung; None: `halving.default_min_epochs`."""
    first_rung_from: Path | None = None
    """A finished run (the λ = 0 baseline): the first rung goes one epoch past its best epoch,
    where its validation metric stopped improving and L2 starts to matter (`first_rung_from_run`)."""
    max_epochs: int | None = None
    """Every trial's train.epochs (its schedule's length) and the last rung; None: the config's."""
    grid_points: int = 5
    storage: str | None = None
    """An Optuna storage URL shared by several machines; None: study.journal in the tune folder."""
    scheduler: str = "halving"
    """halving: every bracket starts at the first rung; hyperband: bracket j starts at rung j
    (`halving.hyperband_sizes`), so one bracket always runs its trials to the end; pbt: one
    population of `trials` trains to the end, the worst copying the best every `perturb_epochs`;
    late: a trunk (the config as given: λ = 0) trains until early stopping ends it, then `trials`
    forks of it at its best epoch train `fork_epochs` more each with their own values, and the
    best fork's values train once more from scratch (`refit`)."""
    perturb_epochs: int | None = None
    """pbt: epochs between two copies; None: max-epochs ÷ 5, at least 1."""
    fork_epochs: int | None = None
    """late: epochs each fork trains past the trunk's best epoch; None: max-epochs ÷ 5, rounded up."""
    trunk_patience: int | None = None
    """late: the trunk's (and so its forks') early-stopping patience; None: 2."""
    refit: bool | None = None
    """late: train the best fork's values from scratch too, as one more trial (None: yes), so that
    validation can choose between λ from the fork point and λ from the start."""


@dataclass(kw_only=True)
class TunePlan:
    """A checked TuneSpec with everything it implies."""

    spec: TuneSpec
    spaces: list[Space]
    name: str
    rungs: list[int]
    min_epochs_reason: str
    metric: str
    mode: str
    trials: int
    tune_dir: Path
    definition: dict[str, Any]

    @property
    def max_epochs(self) -> int:
        return self.rungs[-1]

    @property
    def study_name(self) -> str:
        """The same on every machine that runs the same tune (the definition, not the folder)."""
        return f"rnnl2-tune-{definition_digest(self.definition)}"

    def sweep_spec(self) -> SweepSpec:
        """What `run_planned` and `train_command` read: the config file and the fixed overrides."""
        return SweepSpec(self.spec.config, list(self.spec.fixed))

    @property
    def pbt(self) -> bool:
        return self.spec.scheduler == "pbt"

    @property
    def late(self) -> bool:
        return self.spec.scheduler == "late"

    @property
    def fork_epochs(self) -> int:
        """late: epochs a fork trains past the trunk's best epoch."""
        return self.definition.get("fork_epochs") or 0

    @property
    def refit(self) -> bool:
        return bool(self.definition.get("refit"))

    def trunk_sets(self, trial: Trial) -> list[str]:
        """late: the trunk's early-stopping patience, for the trunk and its forks (whose folders
        hold the trunk's config); none for a refit, which trains as the config says."""
        if not self.late or not (trial.number == 0 or trial.until):
            return []
        return [f"train.early_stopping.patience={self.definition['trunk_patience']}"]

    def fork_until(self, best_epoch: int) -> int:
        """late: a fork's train.epochs, when the trunk's best epoch is `best_epoch`."""
        return min(best_epoch + self.fork_epochs, self.max_epochs)

    def bracket(self, number: int, remaining: int, jobs: int = 1) -> tuple[int, int]:
        """(size, first rung) of bracket `number` when `remaining` trials are still to start."""
        if self.pbt:
            return remaining, 0
        if self.spec.scheduler == "hyperband":
            sizes = hyperband_sizes(self.trials, self.rungs, self.spec.eta)
            size = sizes[number] if number < len(sizes) else remaining
            return min(size, remaining), number % len(self.rungs)
        return bracket_sizes(remaining, self.spec.sampler, self.rungs, self.spec.eta, jobs)[0], 0

    def brackets(self, jobs: int = 1) -> list[tuple[int, int]]:
        """Every bracket's (size, first rung), as the tune will start them."""
        out: list[tuple[int, int]] = []
        remaining = self.trials
        while remaining > 0:
            size, start = self.bracket(len(out), remaining, jobs)
            out.append((size, start))
            remaining -= size
        return out

    def planned_run(self, trial: Trial) -> PlannedRun:
        """A trial as a sweep run: its overrides (sampled values, then train.epochs = max-epochs,
        or a late fork's own epochs). A pbt member that took another's folder, or a late fork,
        holds its source's config until its next resume applies its own values with --force."""
        epochs, extra = trial.until or self.max_epochs, self.trunk_sets(trial)
        changes = [*overrides(trial.params), *([f"train.epochs={epochs}"] if trial.until else [])]
        donor = trial.pending["donor_params"] if trial.pending else None
        return PlannedRun(
            index=trial.number,
            name=trial.name,
            varying=dict(trial.params),
            overrides=self.overrides(trial.params, epochs, extra),
            config_hash=self.config_hash(trial.params, epochs, extra),
            run_dir=self.tune_dir / trial.name,
            epochs=epochs,
            resume_sets=changes if trial.pending else [],
            source_hash=self.config_hash(donor, None, extra) if donor is not None else None,
        )

    def overrides(self, params: dict[str, Any], epochs: int | None = None, extra: list[str] | None = None) -> list[str]:
        """A trial's --set list: the fixed ones, `extra` (late's trunk patience), its values, then
        train.epochs (default: max-epochs)."""
        tail = [*overrides(params), f"train.epochs={epochs or self.max_epochs}"]
        return [*self.spec.fixed, *(extra or []), *tail]

    def config_hash(self, params: dict[str, Any], epochs: int | None = None, extra: list[str] | None = None) -> str:
        return config_hash(to_plain_dict(load_config(self.spec.config, self.overrides(params, epochs, extra))))

    def trunk_params(self) -> dict[str, Any]:
        """late: the trunk's values of the searched keys, as the config gives them (λ = 0 for a
        late-λ search), so trials.csv and best.yaml name them like every fork's."""
        resolved = flatten(to_plain_dict(load_config(self.spec.config, self.spec.fixed)))
        values = (resolved[space.key] for space in self.spaces)
        integral = (int(v) if isinstance(v, float) and v.is_integer() else v for v in values)  # `0`, not `0.0`
        return dict(zip((space.key for space in self.spaces), integral))


def first_rung_from_run(run_dir: Path, max_epochs: int) -> tuple[int, str]:
    """One epoch past the best epoch of a finished run (a λ = 0 baseline of the same task): before
    it every λ is still fitting and the smallest leads; after it the unregularized model
    over-fits and the ranking turns (BENCHMARKS.md, "Early rungs mislead")."""
    summary = read_summary(run_dir) if run_dir.is_dir() else None
    if summary is None or summary.get("status") not in FINISHED or not isinstance(summary.get("best_epoch"), int):
        raise ConfigError(
            f"--first-rung-from {run_dir}: give a finished run folder (its summary.json names a best epoch)"
        )
    epoch = min(summary["best_epoch"] + 1, max_epochs)
    return epoch, f"one epoch past {run_dir}'s best epoch ({summary['best_epoch']})"


def trial_name(number: int, params: dict[str, Any]) -> str:
    return f"trial-{number:04d}-{slug(params)}"


def definition_digest(definition: dict[str, Any]) -> str:
    compared = {k: definition[k] for k in COMPARED if k in definition}  # scheduler: only when not halving
    return hashlib.sha256(json.dumps(compared, sort_keys=True).encode()).hexdigest()[:8]


def check_spaces(spec: TuneSpec, spaces: list[Space], max_epochs: int) -> None:
    """Each space's key and values against the config schema (both ends, every listed value), so
    a misspelt key or an impossible range fails before any folder is made."""
    for space in spaces:
        if space.key == "train.epochs":
            raise ConfigError(f"--space {space.text}: tune sets train.epochs to --max-epochs; search other keys")
        for value in space.bounds():
            try:
                load_config(spec.config, [*spec.fixed, f"{space.key}={format_value(value)}"])
            except ConfigError as error:
                raise ConfigError(f"--space {space.text}: {error}") from None


def plan_rungs(spec: TuneSpec, max_epochs: int, lr_schedule: Any) -> tuple[list[int], str, int | None]:
    """The epochs where trials are compared, why the first is where it is, and late's fork epochs."""
    fork_epochs = None
    if spec.scheduler == "pbt":
        if spec.min_epochs is not None or spec.first_rung_from is not None:
            raise ConfigError(
                "--min-epochs and --first-rung-from place halving's first rung; pbt compares every --perturb-epochs"
            )
        perturb = spec.perturb_epochs or max(1, max_epochs // 5)
        if not 1 <= perturb <= max_epochs:
            raise ConfigError(f"--perturb-epochs {perturb}: give 1 to --max-epochs ({max_epochs})")
        rungs = interval_epochs(perturb, max_epochs)
        reason = "--perturb-epochs" if spec.perturb_epochs else f"max-epochs {max_epochs} ÷ 5"
    elif spec.scheduler == "late":
        if spec.min_epochs is not None or spec.first_rung_from is not None:
            raise ConfigError(
                "--min-epochs and --first-rung-from place halving's first rung; late forks at the trunk's best epoch"
            )
        fork_epochs = spec.fork_epochs or -(-max_epochs // 5)
        if max_epochs < 2 or not 1 <= fork_epochs < max_epochs:
            raise ConfigError(
                f"--fork-epochs {fork_epochs}: give 1 to --max-epochs − 1 ({max_epochs - 1}); "
                "a fork continues the trunk from its best epoch"
            )
        rungs, reason = [max_epochs], "late: one run each"
    else:
        if spec.first_rung_from is not None:
            if spec.min_epochs is not None:
                raise ConfigError("give --min-epochs or --first-rung-from, not both")
            min_epochs, reason = first_rung_from_run(spec.first_rung_from, max_epochs)
        elif spec.min_epochs:
            min_epochs, reason = spec.min_epochs, "--min-epochs"
        else:
            min_epochs, reason = default_min_epochs(lr_schedule, max_epochs, spec.eta)
        rungs = rung_epochs(min_epochs, max_epochs, spec.eta)
    return rungs, reason, fork_epochs


def plan_tune(spec: TuneSpec, runs_dir: Path = Path("runs"), tune_dir: Path | None = None) -> TunePlan:
    """Check the spec against the config and resolve its defaults; makes no folder."""
    if spec.sampler not in SAMPLERS:
        raise ConfigError(f"--sampler {spec.sampler!r}: choose one of {', '.join(SAMPLERS)}")
    if spec.sampler == "tpe" and importlib.util.find_spec("optuna") is None:
        raise ConfigError("--sampler tpe needs Optuna: pip install 'rnnl2[tune]'")
    if spec.storage is not None and spec.sampler != "tpe":
        raise ConfigError("--storage holds an Optuna study: it goes with --sampler tpe")
    if not 2 <= spec.grid_points <= MAX_RUNS:
        raise ConfigError(f"--grid-points {spec.grid_points}: give 2 to {MAX_RUNS:,}")
    if spec.scheduler not in SCHEDULERS:
        raise ConfigError(f"--scheduler {spec.scheduler!r}: choose one of {', '.join(SCHEDULERS)}")
    if spec.scheduler == "pbt" and spec.sampler == "tpe":
        raise ConfigError("--scheduler pbt draws its population at random or on a grid: use --sampler random or grid")
    if spec.perturb_epochs is not None and spec.scheduler != "pbt":
        raise ConfigError("--perturb-epochs sets the interval of --scheduler pbt; add --scheduler pbt")
    if spec.fork_epochs is not None and spec.scheduler != "late":
        raise ConfigError("--fork-epochs sets how long each fork of --scheduler late trains; add --scheduler late")
    if (spec.trunk_patience is not None or spec.refit is not None) and spec.scheduler != "late":
        raise ConfigError("--trunk-patience and --refit/--no-refit shape --scheduler late; add --scheduler late")
    if spec.scheduler == "late" and spec.sampler == "tpe":
        raise ConfigError("--scheduler late forks at one epoch, all at once: use --sampler grid or random")
    if spec.eta < 2:
        raise ConfigError(f"--eta {spec.eta}: keep at least 2 (the best 1/eta of a rung go on)")
    base = load_config(spec.config, spec.fixed)
    max_epochs = spec.max_epochs or base.train.epochs
    load_config(spec.config, [*spec.fixed, f"train.epochs={max_epochs}"])  # within the schema's bounds
    spaces = parse_spaces(spec.spaces)
    check_spaces(spec, spaces, max_epochs)
    rungs, reason, fork_epochs = plan_rungs(spec, max_epochs, base.optimizer.scheduler)
    trials = count_trials(spec, spaces) + (spec.scheduler == "late")  # late: the trunk, then the forks
    stop = base.train.early_stopping
    definition = {
        "config": str(Path(spec.config).resolve()),
        "config_hash": config_hash(to_plain_dict(base)),
        "set": list(spec.fixed),
        "spaces": [s.text for s in spaces],
        "sampler": spec.sampler,
        "seed": spec.seed,
        "eta": spec.eta,
        "rungs": rungs,
        "grid_points": spec.grid_points if spec.sampler == "grid" else None,
        "trials": trials,
        "metric": stop.metric,
        "mode": stop.mode,
    }
    if spec.scheduler != "halving":  # left out for halving, so older tune folders keep their hash
        definition["scheduler"] = spec.scheduler
    if spec.scheduler == "pbt":  # a population does not grow: more trials are another tune
        definition |= {"perturb_epochs": rungs[0] if len(rungs) > 1 else max_epochs, "population": trials}
    if spec.scheduler == "late":
        definition |= {"fork_epochs": fork_epochs, "trunk_patience": spec.trunk_patience or LATE_PATIENCE}
        definition["refit"] = spec.refit is not False
    folder = tune_dir or runs_dir / base.name / f"tune-{definition_digest(definition)}"
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--tune-dir {folder}: is a file; give a folder")
    return TunePlan(
        spec=spec,
        spaces=spaces,
        name=base.name,
        rungs=rungs,
        min_epochs_reason=reason,
        metric=stop.metric,
        mode=stop.mode or default_mode(stop.metric),
        trials=trials,
        tune_dir=folder,
        definition=definition,
    )


def count_trials(spec: TuneSpec, spaces: list[Space]) -> int:
    """--trials, checked; grid: its number of points."""
    if spec.sampler == "grid":
        size = grid_size(spaces, spec.grid_points)
        if spec.trials is not None and spec.trials != size:
            raise ConfigError(f"--sampler grid runs all {size} grid points; leave out --trials or give {size}")
        if size > MAX_RUNS:
            raise ConfigError(f"the grid has {size:,} points; at most {MAX_RUNS:,} are allowed (fewer --grid-points?)")
        return size
    if spec.trials is None:
        raise ConfigError(f"--sampler {spec.sampler} needs --trials N")
    if not 1 <= spec.trials <= MAX_RUNS:
        raise ConfigError(f"--trials {spec.trials}: give 1 to {MAX_RUNS:,}")
    return spec.trials


def check_definition(plan: TunePlan) -> None:
    """A tune folder continues only the tune it was made for; --trials may change. Spaces
    spelled differently but equal in meaning continue it in the folder's spelling, so the Optuna
    study's name and its categorical labels stay those it was made with."""
    path = plan.tune_dir / "tune.json"
    if not path.is_file():
        if (plan.tune_dir / "trials.json").is_file():
            raise Rnnl2Error(f"{plan.tune_dir} holds trials.json but no tune.json; use another --tune-dir")
        return
    saved = read_json(path)
    differs = [k for k in COMPARED if not same_setting(k, saved.get(k), plan.definition.get(k))]
    if differs:
        what = "; ".join(f"{k}: {saved.get(k)!r} there, {plan.definition.get(k)!r} now" for k in differs)
        raise ConfigError(
            f"{plan.tune_dir} holds a different tune ({what}); use another --tune-dir or the same options"
        )
    if saved.get("spaces") != plan.definition.get("spaces"):
        plan.definition["spaces"] = saved["spaces"]
        plan.spaces[:] = parse_spaces(saved["spaces"])


def same_setting(key: str, saved: Any, now: Any) -> bool:
    """Whether a recorded tune setting equals this call's: spaces by what they mean, so
    `choice(1e-4)` and `choice(0.0001)` are one space; every other setting as written."""
    if key != "spaces" or saved == now:
        return saved == now
    try:
        return [meaning(space) for space in parse_spaces(saved)] == [meaning(space) for space in parse_spaces(now)]
    except (ConfigError, TypeError, AttributeError):  # an edited tune.json: not this tune
        return False


def meaning(space: Space) -> tuple[Any, ...]:
    return space.key, space.kind, space.low, space.high, space.choices, space.explicit


def write_definition(plan: TunePlan) -> None:
    write_json(plan.tune_dir / "tune.json", {**plan.definition, "study": plan.study_name})
