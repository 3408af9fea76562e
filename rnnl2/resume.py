"""`rnnl2 train --resume RUN_DIR`: decide whether a run folder can be continued and with which
config, rebuild the run from checkpoints/last.pt, and hand it back to the training loop.

The run's config is the one inside last.pt, not config.yaml (a file anyone can edit): a
config.yaml that differs from it is refused, and changes go through `--force` with a CONFIG or
`--set`. A last.pt stamped with another run's id is refused too. Everything is checked before
anything in the folder is written."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Sequence

from .config import RunConfig, apply_overrides, load_config, to_plain_dict, validate_config
from .distributed import is_main_process
from .errors import ConfigError, Rnnl2Error
from .runs import FolderLock, check_writable, read_run_id, read_summary, write_config
from .status import FINISHED
from .checkpoints import CheckpointError, load_checkpoint
from .state import check_resume_payload, config_differences, restore_state
from .observer import Observer
from .train import RunResult, train_epochs
from .setup import build_setup


def resume(
    run_dir: Path,
    cfg: RunConfig | None = None,
    overrides: Sequence[str] = (),
    force: bool = False,
    observer: Observer | None = None,
    pause_after: int | None = None,
) -> RunResult:
    """Continue a run from its checkpoints/last.pt with the config saved in it.

    A given `cfg` (a CONFIG file) or `overrides` that change it are refused unless `force`; then
    they replace the run's config and its lr, λ, epochs, ... apply from here on (the model must
    still fit the checkpoint)."""
    started = time.perf_counter()
    if not (run_dir / "config.yaml").is_file():
        raise Rnnl2Error(f"--resume {run_dir}: not a run folder (it has no config.yaml)")
    main = is_main_process()  # under torchrun, rank 0 holds the lock and writes; the others only read
    with FolderLock(run_dir) if main else contextlib.nullcontext():
        check_not_finished(run_dir, force)
        payload = read_last_checkpoint(run_dir)
        saved = checkpoint_config(run_dir, payload)
        wanted = resolve_config(run_dir, saved, cfg, overrides, force)
        check_config_file(run_dir, saved, wanted)
        check_writable(run_dir)
        s = build_setup(wanted)
        try:
            state = restore_state(payload, s.device)
            s.model.load_state_dict(payload["model"])
        except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as err:
            raise CheckpointError(
                f"{run_dir / 'checkpoints' / 'last.pt'}: cannot resume from it, it does not fit the "
                f"model and state of this config: {str(err).strip().splitlines()[0]}"
            ) from None
        if pause_after is not None and pause_after <= state.epoch:
            raise ConfigError(f"--pause-after {pause_after}: {run_dir} has already trained {state.epoch} epochs")
        leftovers = (run_dir / "checkpoints").glob(".*.pt.*") if main else ()  # temp files of a killed save
        for leftover in leftovers:
            leftover.unlink(missing_ok=True)
        if wanted != saved:
            if main:
                write_config(run_dir, wanted)
            state.new_config = True
            if wanted.l2 != saved.l2:  # a changed l2 section (λ, adapt) starts λ again from the config
                state.adapt = None
        state.resumed_from.append({"epoch": state.epoch, "step": state.step, "step_in_epoch": state.step_in_epoch})
        return train_epochs(s, run_dir, state, payload, observer or Observer(), started, pause_after)


def check_not_finished(run_dir: Path, force: bool) -> None:
    """A finished run is continued only with --force (and a config that allows more)."""
    status = (read_summary(run_dir) or {}).get("status")
    if status in FINISHED and not force:
        raise Rnnl2Error(
            f"--resume {run_dir}: the run already finished ({status}); to train it further, "
            "pass --force with a config that allows more (e.g. --set train.epochs=N)"
        )


def read_last_checkpoint(run_dir: Path) -> dict[str, Any]:
    """last.pt, verified (archive CRCs, format, this folder's run id, a well-formed resume block)."""
    path = run_dir / "checkpoints" / "last.pt"
    if not path.is_file():
        raise CheckpointError(
            f"--resume {run_dir}: there is no checkpoints/last.pt (output.save_checkpoints "
            "is false, or the run stopped before its first checkpoint)"
        )
    payload = load_checkpoint(path)
    if not isinstance(payload.get("resume"), dict) or not isinstance(payload.get("model"), dict):
        raise CheckpointError(f"{path}: holds no training state to resume from")
    folder_id, checkpoint_id = read_run_id(run_dir), payload.get("run_id")
    if folder_id != checkpoint_id:
        raise CheckpointError(
            f"{path}: belongs to another run (run id {checkpoint_id or 'none'}, this folder's is "
            f"{folder_id or 'none'}); it was copied here from elsewhere"
        )
    check_resume_payload(payload)
    return payload


def checkpoint_config(run_dir: Path, payload: dict[str, Any]) -> RunConfig:
    """The run's config as last.pt recorded it."""
    if not isinstance(payload.get("config"), dict):
        raise CheckpointError(f"{run_dir / 'checkpoints' / 'last.pt'}: holds no config; the checkpoint is damaged")
    try:
        return validate_config(dict(payload["config"]), source=f"{run_dir / 'checkpoints' / 'last.pt'} (its config)")
    except ConfigError as error:
        raise CheckpointError(str(error)) from None


def check_config_file(run_dir: Path, saved: RunConfig, wanted: RunConfig) -> None:
    """config.yaml must say what last.pt says: an edit there would change the run unrecorded. It
    may say what a --force resume asks for (`wanted`): that resume wrote it, then was killed
    before its first checkpoint."""
    try:
        on_disk = load_config(run_dir / "config.yaml")
    except ConfigError as error:
        raise ConfigError(
            f"--resume {run_dir}: its config.yaml is not the config the run trained with: {error}"
        ) from None
    if on_disk not in (saved, wanted):
        changes = "\n".join(f"  {line}" for line in config_differences(saved, on_disk))
        raise ConfigError(
            f"--resume {run_dir}: config.yaml was changed after the last checkpoint "
            f"(checkpoint → file):\n{changes}\nRestore it; to continue with other settings, "
            "use `rnnl2 train --resume RUN --force --set KEY=VALUE`"
        )


def resolve_config(
    run_dir: Path, saved: RunConfig, cfg: RunConfig | None, overrides: Sequence[str], force: bool
) -> RunConfig:
    """The config to continue with: the run's own, or (with --force) a CONFIG file or --set changes."""
    wanted = cfg
    if wanted is None and overrides:
        raw = apply_overrides(to_plain_dict(saved), overrides)
        wanted = validate_config(raw, source=f"{run_dir / 'config.yaml'} with --set")
    if wanted is None or wanted == saved:
        return saved
    if not force:
        changes = "\n".join(f"  {line}" for line in config_differences(saved, wanted))
        raise ConfigError(
            f"--resume {run_dir}: the given config differs from the run's:\n{changes}\n"
            "Leave it out to continue the run as it was, or pass --force to continue with it."
        )
    return wanted
