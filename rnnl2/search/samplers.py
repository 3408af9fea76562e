"""Where `tune` gets each new trial's parameters: seeded random draws, the grid in order, or
Optuna's TPE through ask/tell (its study in the tune folder, or a shared `--storage` database).
Optuna is imported only here, and only for tpe."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

from ..errors import ConfigError, Rnnl2Warning
from ..runs import atomic_write
from ..status import TrialState
from .halving import Trial
from .space import Space, grid_params, optuna_params, params_key, random_params, suggest

STARTUP = 10
"""TPE's first trials are the random sampler's (the same seed gives the same ones), enqueued in
the study so TPE sees them as its own; from then on TPE proposes. With a shared `--storage`
both take a fresh seed instead of --seed: machines running the same command must not all
draw the same trials."""
STUDY_FILE = "study.journal"


class RandomSampler:
    """Trial i: a draw seeded by (seed, i), drawn again if it repeats an earlier trial."""

    def __init__(self, spaces: list[Space], seed: int):
        self.spaces, self.seed = spaces, seed

    def propose(self, number: int, trials: list[Trial]) -> tuple[dict[str, Any], dict[str, int] | None]:
        return random_params(self.spaces, self.seed, number, {params_key(t.params) for t in trials}), None

    def update(self, trials: list[Trial], rungs: list[int]) -> None:
        """Random draws learn nothing from results."""


class GridSampler(RandomSampler):
    """Trial i: the i-th point of the grid (first space slowest)."""

    def __init__(self, spaces: list[Space], points: int):
        self.points = grid_params(spaces, points)

    def propose(self, number: int, trials: list[Trial]) -> tuple[dict[str, Any], dict[str, int] | None]:
        return self.points[number], None


class TpeSampler:
    """Optuna's TPE, asked for one trial at a time and told every rung value (`report`, step =
    the rung epoch) and each trial's end: its value when it completed, PRUNED when a rung
    stopped it, FAIL when it failed."""

    def __init__(self, spaces: list[Space], seed: int, mode: str, study_name: str, storage: str | None, folder: Path):
        try:
            import optuna
        except ImportError:
            raise ConfigError("--sampler tpe needs Optuna: pip install 'rnnl2[tune]'") from None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        shared = storage is not None
        self.optuna, self.spaces = optuna, spaces
        self.seed = int.from_bytes(os.urandom(8), "little") if shared else seed  # see STARTUP
        if storage is None:
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            repair_journal(folder / STUDY_FILE)
            self.storage: Any = JournalStorage(JournalFileBackend(str(folder / STUDY_FILE)))
        try:
            if storage is not None:
                self.storage = optuna.storages.get_storage(storage)  # one storage object for the study and the reports
            self.study = optuna.create_study(
                study_name=study_name,
                storage=self.storage,
                direction="minimize" if mode == "min" else "maximize",
                sampler=optuna.samplers.TPESampler(
                    seed=self.seed % 2**32,  # numpy's seed range
                    n_startup_trials=STARTUP,
                ),
                load_if_exists=True,
            )
        except Exception as error:  # whatever a user's URL makes SQLAlchemy or a driver raise
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(f"--storage: cannot open the Optuna study: {first}") from None

    def propose(self, number: int, trials: list[Trial]) -> tuple[dict[str, Any], dict[str, int] | None]:
        if number < STARTUP:
            start = random_params(self.spaces, self.seed, number, {params_key(t.params) for t in trials})
            self.study.enqueue_trial(optuna_params(self.spaces, start))
        trial = self.study.ask()
        params = suggest(trial, self.spaces)
        for key, value in params.items():  # every value under its own name, λ = 0 too (`pick` params hide it)
            trial.set_user_attr(key, value)
        return params, {"number": trial.number, "id": self.trial_id(trial.number)}

    def trial_id(self, number: int) -> int:
        """The storage's id of the study's trial `number` (public storage API, no private attribute)."""
        study_id = self.storage.get_study_id_from_name(self.study.study_name)
        return self.storage.get_trial_id_from_study_id_trial_number(study_id, number)

    def update(self, trials: list[Trial], rungs: list[int]) -> None:
        """Tell the study what it does not know yet (safe to repeat: a resumed tune calls it again)."""
        OptunaState = self.optuna.trial.TrialState
        known = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        for trial in trials:
            frozen = known.get((trial.optuna or {}).get("number", -1))
            if frozen is None or frozen.state != OptunaState.RUNNING:
                continue
            trial_id = self.trial_id(frozen.number)
            for epoch, value in sorted(trial.values.items()):  # Trial.report, through the storage it writes to
                if value is not None and math.isfinite(value) and epoch not in frozen.intermediate_values:
                    self.storage.set_trial_intermediate_value(trial_id, epoch, value)
            if trial.state == TrialState.COMPLETED and trial.latest_value() is not None:
                self.study.tell(frozen.number, trial.latest_value())
            elif trial.state == TrialState.STOPPED:
                self.study.tell(frozen.number, state=OptunaState.PRUNED)
            elif trial.state in (TrialState.FAILED, TrialState.COMPLETED):
                self.study.tell(frozen.number, state=OptunaState.FAIL)


def repair_journal(path: Path) -> None:
    """Check study.journal before Optuna reads it: a torn last line (a kill cut the write) is
    dropped with a warning, as the JSONL readers skip one; damage anywhere else (garbage bytes,
    a cut line in the middle) is an error naming the file and the line, not Optuna's traceback."""
    if not path.is_file():
        return
    data = path.read_bytes()
    lines = data.split(b"\n")
    kept = len(data)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
            if not isinstance(record, dict) or "op_code" not in record:
                raise ValueError("not a journal record")
        except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            if number == len(lines):  # the last line, with no newline after it: a write cut short
                kept = len(data) - len(line)
                warnings.warn(f"{path}: line {number} is cut short (a write was interrupted); dropped it", Rnnl2Warning)
                break
            raise ConfigError(
                f"{path}: line {number} is not an Optuna journal record; the file is damaged "
                "(restore it, or start the tune in a new --tune-dir)"
            ) from None
    if kept < len(data):
        atomic_write(path, lambda handle: handle.write(data[:kept]), binary=True)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def build_sampler(plan, folder: Path):
    """The sampler a plan names (`plan`: a tune_plan.TunePlan)."""
    spec = plan.spec
    if spec.sampler == "grid":
        return GridSampler(plan.spaces, spec.grid_points)
    if spec.sampler == "tpe":
        return TpeSampler(plan.spaces, spec.seed, plan.mode, plan.study_name, spec.storage, folder)
    return RandomSampler(plan.spaces, spec.seed)
