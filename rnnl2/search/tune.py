"""Run a tune: new trials from the sampler, successive halving of each bracket (`halving`), and
each rung's training through `sweep_run.run_planned`: a trial pauses at its rung with its checkpoint,
and a promoted one resumes exactly. trials.json is rewritten after every change and the run
folders are the truth, so the same command continues an interrupted tune and retrains nothing."""

from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import load_config
from ..errors import ConfigError, Rnnl2Warning
from ..launch import EventFn, Launch
from ..mlflow_tracking import parent_run, tag_trial
from ..run_state import FolderState, folder_state, killed_from_outside
from ..runs import FolderLock, read_summary, remove_write_leftovers, set_aside
from ..status import ACTIVE, FINISHED, ManifestStatus, RunStatus, TrialState
from ..tracking import close_pruned
from .halving import Trial, finite, run_bracket
from .late import fork, fork_late
from .manifest import Manifest, PlannedRun
from .pbt import copy_member
from .pbt import decide as decide_interval
from .samplers import build_sampler
from .sweep_run import run_planned
from .tune_outputs import load_trials, select_best, write_figures, write_trials
from .tune_plan import TunePlan, check_definition, trial_name, write_definition

DRIVER_FILES = ("trials.json", "trials.csv", "sweep.jsonl", "tune.json", "best.yaml", "selection.json")
"""What the tune driver writes in its folder: a SIGKILLed driver may leave a temp file of each."""
KILLED_RETRIES = 1
"""Times a trial killed from outside resumes at once, before the tune stops to wait for a rerun."""


@dataclass
class TuneResult:
    """How a tune ended: every trial, the chosen one, and what it cost."""

    plan: TunePlan
    trials: list[Trial]
    selection: dict[str, Any] | None
    wall_seconds: float
    interrupted: bool
    figures: list[Path] = field(default_factory=list)
    trained_now: int = 0
    """Training runs (a rung of one trial each) this call started: 0 when it only read a finished tune."""
    killed: list[str] = field(default_factory=list)
    """Trials killed from outside twice in this call: their rung waits for the next call to resume them."""

    @property
    def tune_dir(self) -> Path:
        return self.plan.tune_dir

    @property
    def failed(self) -> list[str]:
        return [t.name for t in self.trials if t.state == TrialState.FAILED]

    @property
    def epochs_used(self) -> int:
        """Epochs trained; a late fork's epochs up to its fork point are the trunk's, counted once."""
        inherited = sum(t.lineage[-1]["epoch"] for t in self.trials if t.until and t.lineage)
        return sum(t.epochs for t in self.trials) - inherited

    @property
    def grid_epochs(self) -> int:
        """What training every trial to the end would cost (late: the forks planned, made or not)."""
        return (self.plan.trials if self.plan.late else len(self.trials)) * self.plan.max_epochs

    def to_json(self) -> dict[str, Any]:
        return {
            "tune_dir": str(self.tune_dir),
            "sampler": self.plan.spec.sampler,
            "metric": self.plan.metric,
            "mode": self.plan.mode,
            "rungs": self.plan.rungs,
            "trials": len(self.trials),
            "states": {s: sum(t.state == s for t in self.trials) for s in sorted({t.state for t in self.trials})},
            "selection": self.selection,
            "epochs_used": self.epochs_used,
            "grid_epochs": self.grid_epochs,
            "train_seconds": sum(t.seconds for t in self.trials),
            "wall_seconds": self.wall_seconds,
            "interrupted": self.interrupted,
            "trained_now": self.trained_now,
            "failed": self.failed,
            "killed": self.killed,
            "figures": [str(f) for f in self.figures],
        }


def run_tune(plan: TunePlan, launch: Launch, on_event: EventFn = lambda kind, info: None) -> TuneResult:
    """Run (or continue) the tune `plan` describes in its folder; Ctrl-C stops it with every
    trial's state saved. The library entry point: `run_tune(plan_tune(TuneSpec(...)), Launch())`."""
    started = time.perf_counter()
    created = [p for p in (plan.tune_dir, *plan.tune_dir.parents) if not p.exists()]  # the top one last
    plan.tune_dir.mkdir(parents=True, exist_ok=True)
    with FolderLock(plan.tune_dir):  # one driver per tune folder
        check_definition(plan)
        remove_write_leftovers(plan.tune_dir, DRIVER_FILES)
        try:
            sampler = build_sampler(plan, plan.tune_dir)
        except ConfigError:  # a bad --storage: leave no folder behind
            if created:
                shutil.rmtree(created[-1], ignore_errors=True)
            raise
        write_definition(plan)
        with parent_run(
            plan.tune_dir, load_config(plan.spec.config, plan.spec.fixed), "tune", plan.definition
        ) as ended:
            tuner = Tuner(plan, launch, sampler, on_event)
            with launch:  # one set of warm workers for every rung
                interrupted = tuner.run()
            selection = select_best(plan.tune_dir, tuner.trials, plan.metric, plan.mode)
            figures = write_figures(plan.tune_dir, tuner.trials, plan.spaces, plan.rungs, plan.metric)
            wall = time.perf_counter() - started
            killed = [t.name for t in tuner.killed]
            interrupted = interrupted and not killed
            ended("interrupted" if interrupted or killed else "completed")
        return TuneResult(plan, tuner.trials, selection, wall, interrupted, figures, tuner.started, killed)


class Tuner:
    """The trials of one tune folder, the manifest `run_planned` keeps, and the sampler."""

    def __init__(self, plan: TunePlan, launch: Launch, sampler: Any, on_event: EventFn):
        self.plan, self.launch, self.sampler, self.on_event = plan, launch, sampler, on_event
        self.started = 0  # training runs started by this driver
        self.trials = load_trials(plan.tune_dir)
        self.runs: dict[str, PlannedRun] = {t.name: plan.planned_run(t) for t in self.trials}
        self.manifest = Manifest(plan.tune_dir)
        self.manifest.merge(list(self.runs.values()), replan=plan.pbt)
        self.sampler.update(self.trials, plan.rungs)  # what a stopped driver had not told it yet
        self.killed: list[Trial] = []  # trials killed from outside twice in this call: the rung waits
        self.revive_killed()
        for trial in self.trials:  # what earlier calls trained, for the live progress
            self.emit("known", trial)

    def run(self) -> bool:
        """Finish the brackets begun, then start new ones until there are `trials`; True when interrupted."""
        try:
            if self.plan.pbt:
                return self.populate()
            if self.plan.late:
                return fork_late(self)
            for bracket in sorted({t.bracket for t in self.trials}):
                if self.halve([t for t in self.trials if t.bracket == bracket]):
                    return True
            while len(self.trials) < self.plan.trials:
                number = max((t.bracket for t in self.trials), default=-1) + 1
                size, start = self.plan.bracket(number, self.plan.trials - len(self.trials), self.launch.jobs)
                if self.halve(self.new_bracket(size, start)):
                    return True
                if len(self.trials) < self.plan.trials:  # the figures and best.yaml so far
                    write_figures(self.plan.tune_dir, self.trials, self.plan.spaces, self.plan.rungs, self.plan.metric)
                    select_best(self.plan.tune_dir, self.trials, self.plan.metric, self.plan.mode)
        except KeyboardInterrupt:
            return True
        finally:
            self.save()
        return False

    def populate(self) -> bool:
        """pbt: one population, trained interval by interval; after each, the worst take a
        copy of a best one's folder and perturbed values (`pbt.decide`). True when interrupted."""
        if len(self.trials) < self.plan.trials:
            self.new_bracket(self.plan.trials - len(self.trials), number=0)
        rungs = self.plan.rungs
        for k in range(len(rungs)):
            self.carry_out_copies()
            todo = [t for t in self.trials if t.rung == k and t.state in ACTIVE]
            if todo and self.train(todo):
                return True
            if k + 1 < len(rungs):
                events = decide_interval(self.trials, k, rungs, self.plan.mode, self.plan.spaces, self.plan.spec.seed)
                for kind, trial in events:
                    if kind == "exploited":
                        self.runs[trial.name] = self.plan.planned_run(trial)
                self.manifest.merge(list(self.runs.values()), replan=True)
                self.decided(events)
        return False

    def carry_out_copies(self) -> None:
        """Every copy decided and not yet made: the recipient's folder becomes the donor's, as it
        was paused at the interval's end (`pbt.copy_member`), saved as done before training."""
        for trial in self.trials:
            if trial.pending and not trial.pending.get("copied"):
                source = self.plan.tune_dir / trial.pending["from"]
                copy_member(source, self.runs[trial.name].run_dir, trial.pending["epoch"], trial.lineage)
                trial.pending["copied"], trial.epochs = True, trial.pending["epoch"]
                self.save()

    def revive_killed(self) -> None:
        """A trial an outside kill failed (SIGKILL of its worker, the OOM killer) by an earlier
        driver goes back to training, as long as its rung was not decided without it: the run
        below resumes it from its last.pt, or sets it aside and trains it again."""
        for trial in self.trials:
            if trial.state != TrialState.FAILED or trial.error == RunStatus.DIVERGED:
                continue
            record = self.manifest.record(trial.name)
            summary = read_summary(self.runs[trial.name].run_dir) or {}
            if killed_from_outside(record.get("exit_code"), summary) and not rung_decided(self.trials, trial):
                self.back_to_training(trial)

    def back_to_training(self, trial: Trial) -> None:
        """The state the trial had before its rung's run began; its value there is not known."""
        trial.state = TrialState.PROMOTED if trial.rung else TrialState.PENDING
        trial.values.pop(self.target(trial), None)

    def halve(self, bracket: list[Trial]) -> bool:
        return run_bracket(bracket, self.plan.rungs, self.plan.spec.eta, self.plan.mode, self.train, self.decided)

    def new_bracket(self, size: int, start: int = 0, number: int | None = None) -> list[Trial]:
        """`size` new trials admitted to rung `start`, each saved as soon as the sampler gives it
        (a tpe trial is asked once); `number`: the bracket (default: a new one)."""
        number = max((t.bracket for t in self.trials), default=-1) + 1 if number is None else number
        bracket = []
        for _ in range(size):
            params, ref = self.sampler.propose(len(self.trials), self.trials)
            trial = Trial(
                len(self.trials), trial_name(len(self.trials), params), params, number, rung=start, optuna=ref
            )
            if self.plan.pbt:
                trial.lineage = [{"epoch": 0, "params": dict(params), "from": None}]
            self.trials.append(trial)
            self.runs[trial.name] = self.plan.planned_run(trial)
            bracket.append(trial)
            self.save()
        self.manifest.merge(list(self.runs.values()))
        return bracket

    def save(self) -> None:
        info = {"metric": self.plan.metric, "mode": self.plan.mode, "rungs": self.plan.rungs}
        write_trials(self.plan.tune_dir, info, self.trials, [s.key for s in self.plan.spaces])

    def emit(self, kind: str, trial: Trial, epoch: int | None = None, **extra: Any) -> None:
        """One event for the printer; `epoch`: the rung it is about (default: the trial's current one)."""
        epoch = epoch or self.target(trial)
        info = {"name": trial.name, "trial": trial.number, "bracket": trial.bracket, "rung": trial.rung}
        info |= {"epoch": epoch, "metric": self.plan.metric, "value": trial.values.get(epoch), "state": trial.state}
        self.on_event(kind, {**info, "epochs": trial.epochs, "error": trial.error, **extra})

    def decided(self, events: list[tuple[str, Trial]]) -> None:
        for kind, trial in events:  # before the decision is saved: a driver killed between the two redoes both
            run_dir = self.runs[trial.name].run_dir
            if kind == "stopped":
                close_pruned(run_dir)
            tag_trial(run_dir, {"rnnl2.rung": trial.rung, "rnnl2.decision": kind}, pruned=kind == "stopped")
        self.save()
        for kind, trial in events:
            went_on = kind in ("promoted", "exploited")
            extra = (
                {"source": trial.pending["from"], "params": trial.params}
                if kind == "exploited" and trial.pending
                else {}
            )
            self.emit(kind, trial, epoch=self.plan.rungs[trial.rung - 1 if went_on else trial.rung], **extra)
        self.sampler.update([t for _, t in events], self.plan.rungs)

    def train(self, todo: list[Trial]) -> bool:
        """Train each trial to its rung (paused there, or to the end at the last rung); a trial
        whose folder already got there is only read. A trial killed from outside (its worker
        SIGKILLed) resumes once more at once; killed again, it stays active and the rung is not
        decided without it: this call stops (exit 1) and the next resumes it. Returns True when
        interrupted or stopped so."""
        for attempt in range(KILLED_RETRIES + 1):
            if self.train_once(todo):
                return True
            killed = [t for t in todo if t.state in ACTIVE]
            if not killed:
                return False
            if attempt < KILLED_RETRIES:
                for trial in killed:
                    warnings.warn(f"{trial.name}: {trial.error}; resuming it", Rnnl2Warning, stacklevel=2)
            todo = killed
        self.killed = todo
        return True

    def train_once(self, todo: list[Trial]) -> bool:
        batch = []
        for trial in todo:
            run = self.runs[trial.name]
            how = self.prepare(trial, run)
            if how is None:  # its folder had got there: a driver stopped before it read it
                self.emit("skip" if trial.state != TrialState.FAILED else "failed", trial)
                continue
            target = self.target(trial)
            pause = target if target < (trial.until or self.plan.max_epochs) else None
            record = self.manifest.update(
                run.name,
                status=ManifestStatus.PENDING,
                exit_code=None,
                error=None,
                resume=how == "resume",
                pause_after=pause,
            )
            batch.append((run, record))
        self.save()
        if batch:
            first = next(t for t in todo if t.name == batch[0][0].name)
            where = {"bracket": first.bracket, "rung": first.rung, "rungs": len(self.plan.rungs)}
            self.on_event("rung", {**where, "epoch": self.target(first), "names": [run.name for run, _ in batch]})
        interrupted = bool(batch) and run_planned(self.plan.sweep_spec(), batch, self.manifest, self.launch, self.relay)
        self.save()
        self.sampler.update(todo, self.plan.rungs)
        return interrupted

    def target(self, trial: Trial) -> int:
        """The epoch the trial trains to now: its rung's, or a late fork's own end."""
        return trial.until or self.plan.rungs[trial.rung]

    def prepare(self, trial: Trial, run: PlannedRun) -> str | None:
        """What the trial's folder says: None when it already reached its rung (recorded now),
        `resume` from its last.pt, or `fresh` (a failed or foreign attempt is set aside first)."""
        record = self.manifest.record(run.name)
        code = record.get("exit_code") if record.get("status") == ManifestStatus.FAILED else None
        reading = folder_state(run.run_dir, run.accepted_hashes, code, self.target(trial))
        if reading.state == FolderState.ABSENT:
            return fork(self, trial) if trial.until else "fresh"
        if reading.state in (FolderState.DONE, FolderState.REACHED, FolderState.DIVERGED):
            self.settle(trial, reading.summary)
            return None
        if reading.state == FolderState.RESUME:
            return "resume"
        moved = set_aside(run.run_dir)
        again = "forking it again" if trial.until else "starting it again"
        warnings.warn(f"{run.name}: kept its unfinished attempt in {moved.name}; {again}", Rnnl2Warning)
        return fork(self, trial) if trial.until else "fresh"

    def settle(self, trial: Trial, summary: dict[str, Any]) -> bool:
        """`settle` at the trial's rung; a pbt member is ranked by its metric at that epoch, and
        a copy it was waiting to train on is done once it gets there."""
        if not settle(trial, summary, self.target(trial), current=self.plan.pbt):
            return False
        if trial.pending:
            trial.pending = None
            self.runs[trial.name] = self.plan.planned_run(trial)
        return True

    def relay(self, kind: str, record: dict[str, Any]) -> None:
        """`run_planned`'s events: record each trial's end as soon as it comes."""
        trial = next(t for t in self.trials if t.name == record["name"])
        if kind == "start":
            trial.state, self.started = TrialState.RUNNING, self.started + 1
            self.emit("start", trial, resume=bool(record.get("resume")))
            return
        summary = read_summary(Path(record["run_dir"])) or {}
        if kind in ("done", "failed") and not self.settle(trial, summary):
            trial.error = record.get("error") or f"ended before epoch {self.target(trial)}"
            if killed_from_outside(record.get("exit_code"), summary):
                self.back_to_training(trial)
                kind = "killed"
            else:
                trial.state = TrialState.FAILED
                trial.values[self.target(trial)] = None
        self.save()
        shown = kind if kind in ("interrupted", "killed") else trial.state
        self.emit(shown, trial, error=trial.error or record.get("error"))


def rung_decided(trials: list[Trial], trial: Trial) -> bool:
    """Whether the trial's rung was already decided in its bracket (a trial went past it, or
    stopped there): then reviving the trial would change decisions made without it."""
    peers = [t for t in trials if t.bracket == trial.bracket and t is not trial]
    return any(t.rung > trial.rung or (t.rung == trial.rung and t.state == TrialState.STOPPED) for t in peers)


def settle(trial: Trial, summary: dict[str, Any], target: int, current: bool = False) -> bool:
    """Record what a run's summary.json says about its trial reaching epoch `target`: paused there,
    finished (early stopping may end it sooner; its test metrics are in), or diverged; False when
    it has not got there yet. Its value there is the best so far, or with `current` (pbt) the
    metric at that epoch while it is paused."""
    status = summary.get("status")
    if status == RunStatus.PAUSED and (summary.get("epochs_run") or 0) >= target:
        trial.state = TrialState.PAUSED
    elif status in FINISHED:
        trial.state = TrialState.COMPLETED
        trial.metrics = {k: v for k, v in summary.items() if k.startswith(("val_", "test_")) or k == "best_epoch"}
    elif status == RunStatus.DIVERGED:
        trial.state, trial.error = TrialState.FAILED, RunStatus.DIVERGED.value
    else:
        return False
    value = summary.get("best_value")
    if current and trial.state == TrialState.PAUSED:
        value = (summary.get("final") or {}).get(summary.get("best_metric"))
    trial.values[target] = finite(value) if trial.state != TrialState.FAILED else None
    trial.epochs = summary.get("epochs_run") or trial.epochs
    trial.seconds = summary.get("wall_seconds") or trial.seconds  # every segment so far, resumes included
    return True
