"""What `checkpoints/last.pt` carries so a run continues exactly where it stopped (RNG states,
position in the epoch, early stopping, metrics so far), and the stop requests that Ctrl-C and
SIGTERM make. Everything stored is a tensor, number, string, list or dict, so the file still
loads with `torch.load(weights_only=True)`."""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .config import RunConfig, to_plain_dict
from .precision import check_scaler_state
from .runs import MetricsLog
from .checkpoints import CheckpointError, save_checkpoint


@dataclass
class TrainState:
    """Where training stands; everything here is saved in last.pt and restored by --resume.

    A checkpoint at an epoch boundary has `step_in_epoch == 0`; a mid-epoch one (from
    `train.checkpoint_every_steps` or a signal) records how many batches of epoch `epoch + 1`
    are done, the epoch's running sums, and the shuffle state *at the start* of that epoch,
    so the resumed epoch draws the same order and skips the batches already trained on.
    """

    epoch: int = 0
    """Completed epochs."""
    step: int = 0
    """Optimizer steps so far, in all epochs."""
    step_in_epoch: int = 0
    loss_sum: torch.Tensor | None = None  # Σ data_loss · batch size over the epoch's steps so far
    grad_sum: torch.Tensor | None = None  # Σ gradient norm over the epoch's steps so far
    samples: int = 0
    hidden: Any = None  # the carried hidden state of stateful (text_lm) training
    shuffle_state: torch.Tensor | None = None  # the shuffle generator's state at the start of epoch `epoch + 1`
    best_value: float | None = None
    best_epoch: int = 0
    since_best: int = 0
    best_model: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: list[dict[str, int]] = field(default_factory=list)
    run_id: str | None = None  # the run folder's identity (run.json), stamped into every checkpoint
    checked_step: int = 0  # the last step whose loss, gradients and weights were read as finite (not saved)
    saved_at: tuple[int, int] | None = None  # (epoch, step) of the state in last.pt (not saved)
    adapt: dict[str, Any] | None = None  # the adaptive-λ state (`adapt.LambdaAdapter.state_dict`), once λ moved
    activity_sum: torch.Tensor | None = None  # Σ [AR, TAR] · batch size over the epoch's steps (when on)
    new_config: bool = False  # resumed with --force and a changed config: its lr, λ, ... apply (not saved)
    wall_before: float = 0.0  # seconds the earlier segments of a resumed run took, to their last checkpoint
    started: float | None = None  # perf_counter() at this segment's start (not saved)

    def wall_seconds(self) -> float:
        """Seconds the run has taken so far, every segment together."""
        return self.wall_before + (time.perf_counter() - self.started if self.started is not None else 0.0)

    def start_epoch(self, device: torch.device, generator: torch.Generator) -> None:
        """Rewind the shuffle generator to this epoch's start; reset the sums unless resumed part-way."""
        if self.shuffle_state is None:
            self.shuffle_state = generator.get_state()
        generator.set_state(self.shuffle_state)
        if self.step_in_epoch == 0:
            self.loss_sum = torch.zeros((), device=device)
            self.grad_sum = torch.zeros((), device=device)
            self.samples, self.hidden = 0, None
            self.activity_sum = None

    def add_activity(self, weighted: torch.Tensor) -> None:
        """Add one step's [AR, TAR] · batch size to the epoch's sums."""
        self.activity_sum = weighted if self.activity_sum is None else self.activity_sum + weighted

    def end_epoch(self, generator: torch.Generator) -> None:
        self.epoch += 1
        self.step_in_epoch = 0
        self.shuffle_state = generator.get_state()  # where the next epoch's shuffle starts


# ------------------------------------------------------------------------- RNG states


def capture_rng() -> dict[str, Any]:
    """python `random`, torch CPU and every CUDA device's generator, as plain values and tensors.

    numpy is not used by training, so its state is not part of a run."""
    version, internal, gauss = random.getstate()
    states: dict[str, Any] = {"python": [version, list(internal), gauss], "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])


# ------------------------------------------------------------------------ checkpoints


def detach_hidden(hidden: Any) -> Any:
    if hidden is None:
        return None
    return tuple(h.detach() for h in hidden) if isinstance(hidden, tuple) else hidden.detach()


def save_checkpoints(run_dir: Path, s: Any, optimizer, scheduler, state: TrainState, best: bool) -> None:
    """last.pt (with the state to resume from) and, after an improved epoch, best.pt; `s` is the
    run's `train.Setup` (config, data spec, model)."""
    if not s.cfg.output.save_checkpoints:
        return
    payload = checkpoint_payload(s, optimizer, scheduler, state)
    resume = training_payload(state)
    if best:  # with the state to resume from too, so `rnnl2 fork` can start a run from its best epoch;
        # its best weights are the model's own tensors, stored once
        save_checkpoint(
            run_dir / "checkpoints" / "best.pt", {**payload, "resume": {**resume, "best_model": payload["model"]}}
        )
    save_checkpoint(run_dir / "checkpoints" / "last.pt", {**payload, "resume": resume})
    state.saved_at = (state.epoch, state.step)


def checkpoint_payload(s: Any, optimizer, scheduler, state: TrainState) -> dict[str, Any]:
    """Plain dicts and tensors only, so `torch.load(weights_only=True)` can read it."""
    return {
        "config": to_plain_dict(s.cfg),
        "data_spec": s.spec.to_dict(),
        "model": s.model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": state.epoch,
        "step": state.step,
        "metrics": state.history[-1] if state.history else {},
        "run_id": state.run_id,
        "rnnl2_version": __version__,
        "baseline_fit": s.baseline_fit,
    } | ({"scaler": s.precision.state_dict()} if s.precision.scaler is not None else {})


def training_payload(state: TrainState) -> dict[str, Any]:
    """The `resume` block of last.pt (tensors stay on their device; torch.save copies them)."""
    return {
        "step_in_epoch": state.step_in_epoch,
        "loss_sum": state.loss_sum,
        "grad_sum": state.grad_sum,
        "samples": state.samples,
        "hidden": list(state.hidden) if isinstance(state.hidden, tuple) else state.hidden,
        "shuffle_state": state.shuffle_state,
        "best_value": state.best_value,
        "best_epoch": state.best_epoch,
        "since_best": state.since_best,
        "best_model": state.best_model,
        "history": state.history,
        "resumed_from": state.resumed_from,
        "wall_seconds": state.wall_seconds(),
        "rng": capture_rng(),
    } | optional_parts(state)


def optional_parts(state: TrainState) -> dict[str, Any]:
    """What only some runs have (older checkpoints lack the keys): the adaptive-λ state, and the
    epoch's AR/TAR sums so far."""
    parts = {"adapt": state.adapt, "activity_sum": state.activity_sum}
    return {key: value for key, value in parts.items() if value is not None}


def restore_state(payload: dict[str, Any], device: torch.device) -> TrainState:
    """The TrainState saved in last.pt, on `device` (the payload checked by `check_resume_payload`
    first); the RNG states are restored by the caller once everything that draws random numbers
    while being built has been built."""
    saved = payload["resume"]
    hidden = saved["hidden"]
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    best = saved["best_model"]
    return TrainState(
        epoch=int(payload["epoch"]),
        step=int(payload["step"]),
        step_in_epoch=int(saved["step_in_epoch"]),
        loss_sum=to(saved["loss_sum"]),
        grad_sum=to(saved["grad_sum"]),
        samples=int(saved["samples"]),
        hidden=tuple(to(h) for h in hidden) if isinstance(hidden, list) else to(hidden),
        shuffle_state=saved["shuffle_state"],
        best_value=saved["best_value"],
        best_epoch=int(saved["best_epoch"]),
        since_best=int(saved["since_best"]),
        best_model=None if best is None else {k: v.to(device) for k, v in best.items()},
        history=list(saved["history"]),
        resumed_from=list(saved.get("resumed_from", [])),
        wall_before=float(saved.get("wall_seconds", 0.0)),
        adapt=saved.get("adapt"),
        activity_sum=to(saved.get("activity_sum")),
        run_id=payload.get("run_id"),
        checked_step=int(payload["step"]),
        saved_at=(int(payload["epoch"]), int(payload["step"])),
    )


def check_resume_payload(payload: dict[str, Any]) -> None:
    """Every field `--resume` reads from last.pt has the type and shape it needs, checked before
    anything is written, so a damaged or hand-made resume block is refused with the field named."""

    def need(ok: bool, field_name: str, rule: str) -> None:
        if not ok:
            raise CheckpointError(
                f"last.pt: resume.{field_name} {rule}; the checkpoint is damaged or not one rnnl2 wrote"
            )

    def count(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    def tensor_or_none(value: Any) -> bool:
        return value is None or (isinstance(value, torch.Tensor) and value.numel() == 1)

    need(count(payload.get("epoch")) and count(payload.get("step")), "epoch/step", "must be whole numbers ≥ 0")
    scaler = payload.get("scaler")
    need(scaler is None or check_scaler_state(scaler), "scaler", "must be a gradient scaler's state (numbers)")
    saved = payload["resume"]
    for key in ("step_in_epoch", "samples", "best_epoch", "since_best"):
        need(count(saved.get(key)), key, "must be a whole number ≥ 0")
    need(
        tensor_or_none(saved.get("loss_sum")) and tensor_or_none(saved.get("grad_sum")),
        "loss_sum/grad_sum",
        "must be one-number tensors",
    )
    need(
        saved.get("best_value") is None or isinstance(saved.get("best_value"), (int, float)),
        "best_value",
        "must be a number",
    )
    history = saved.get("history")
    need(isinstance(history, list) and all(isinstance(r, dict) for r in history), "history", "must be a list of rows")
    need(len(history) == payload["epoch"], "history", f"must hold one row per finished epoch ({payload['epoch']})")
    need(isinstance(saved.get("resumed_from", []), list), "resumed_from", "must be a list")
    wall = saved.get("wall_seconds", 0.0)
    need(
        isinstance(wall, (int, float)) and not isinstance(wall, bool) and wall >= 0,
        "wall_seconds",
        "must be a number >= 0",
    )
    reference = torch.get_rng_state()
    shuffle = saved.get("shuffle_state")
    need(
        shuffle is None
        or (isinstance(shuffle, torch.Tensor) and shuffle.dtype == torch.uint8 and shuffle.shape == reference.shape),
        "shuffle_state",
        "must be a generator state",
    )
    best = saved.get("best_model")
    need(
        best is None or (isinstance(best, dict) and all(isinstance(v, torch.Tensor) for v in best.values())),
        "best_model",
        "must be a state dict",
    )
    hidden = saved.get("hidden")
    need(
        hidden is None
        or isinstance(hidden, torch.Tensor)
        or (isinstance(hidden, list) and all(isinstance(h, torch.Tensor) for h in hidden)),
        "hidden",
        "must be tensors",
    )
    need(saved.get("adapt") is None or adapt_state_ok(saved["adapt"]), "adapt", "must be an adaptive-λ state")
    activity = saved.get("activity_sum")
    need(
        activity is None or (isinstance(activity, torch.Tensor) and activity.shape == (2,)),
        "activity_sum",
        "must be a 2-number tensor",
    )
    rng = saved.get("rng")
    need(
        isinstance(rng, dict)
        and isinstance(rng.get("torch"), torch.Tensor)
        and rng["torch"].dtype == torch.uint8
        and rng["torch"].shape == reference.shape,
        "rng.torch",
        "must be a generator state",
    )
    try:
        version, internal, gauss = rng["python"]
        random.Random().setstate((version, tuple(internal), gauss))
    except (TypeError, ValueError, KeyError):
        need(False, "rng.python", "must be a state of Python's random module")
    try:
        torch.Generator().set_state(rng["torch"])
        if shuffle is not None:
            torch.Generator().set_state(shuffle)
    except RuntimeError:
        need(False, "rng", "must hold valid generator states")


def adapt_state_ok(adapt: Any) -> bool:
    """{log_lambda: [finite], moments: [[mean, square ≥ 0]] as many, updates: count}, as `adapt` saves it."""

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    if not isinstance(adapt, dict) or not isinstance(adapt.get("log_lambda"), list):
        return False
    moments, updates = adapt.get("moments"), adapt.get("updates")
    return (
        all(number(v) for v in adapt["log_lambda"])
        and isinstance(moments, list)
        and len(moments) == len(adapt["log_lambda"])
        and all(isinstance(m, list) and len(m) == 2 and all(number(v) for v in m) and m[1] >= 0 for m in moments)
        and isinstance(updates, int)
        and not isinstance(updates, bool)
        and updates >= 0
    )


def restore_training(payload: dict[str, Any], optimizer, scheduler, log: MetricsLog, state: TrainState) -> None:
    """Optimizer, schedule, metrics rows up to the checkpoint, and the RNG states, as saved."""
    fresh = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    try:
        optimizer.load_state_dict(payload["optimizer"])
        if scheduler is not None and payload.get("scheduler") is not None:
            scheduler.load_state_dict(payload["scheduler"])
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"last.pt: the optimizer state does not fit this config: {str(err).splitlines()[0]}"
        ) from None
    if state.new_config:  # --force with a changed config: its lr, λ, ... apply from now on
        for group, settings in zip(optimizer.param_groups, fresh):
            group.update(settings)
    log.rewrite(state.history)  # drops any row written after the checkpoint
    restore_rng(payload["resume"]["rng"])


def config_differences(saved: RunConfig, given: RunConfig) -> list[str]:
    """`key: run value → given value` for every leaf where two configs differ."""
    lines: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        elif a != b:
            lines.append(f"{path}: {a!r} → {b!r}")

    walk(to_plain_dict(saved), to_plain_dict(given), "")
    return lines


# ---------------------------------------------------------------------------- signals


class StopRequest:
    """Within `with StopRequest() as stop:`, SIGINT or SIGTERM sets `stop.signal`, and the loop
    stops after the current step and saves; a second signal raises KeyboardInterrupt at once.

    Handlers can only be installed from the main thread; elsewhere signals keep their defaults.
    """

    def __init__(self) -> None:
        self.signal: str | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
