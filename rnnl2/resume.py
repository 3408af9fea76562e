"""`rnnl2 train --resume RUN_DIR`: check that a run folder can be continued, rebuild the run
from its config.yaml and checkpoints/last.pt, and hand it back to the training loop."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .config import RunConfig, load_config
from .errors import ConfigError, Rnnl2Error
from .runs import CheckpointError, check_writable, load_checkpoint, write_config
from .state import config_differences, restore_state
from .train import Observer, RunResult, build_setup, train_epochs

FINISHED = ("completed", "early_stopped", "max_steps")


def resume(run_dir: Path, cfg: RunConfig | None = None, force: bool = False,
           observer: Observer | None = None) -> RunResult:
    """Continue a run from its checkpoints/last.pt with its own config.yaml.

    A different `cfg` is refused unless `force`; then it replaces config.yaml and its lr, λ,
    epochs, ... apply from here on (the model must still fit the checkpoint)."""
    started = time.perf_counter()
    saved = read_run_config(run_dir, force)
    if cfg is not None and cfg != saved and not force:
        changes = "\n".join(f"  {line}" for line in config_differences(saved, cfg))
        raise ConfigError(f"--resume {run_dir}: the given config differs from the run's config.yaml:\n{changes}\n"
                          "Leave out the config to continue the run as it was, or pass --force to continue with it.")
    cfg = cfg if cfg is not None else saved
    payload = read_last_checkpoint(run_dir)
    check_writable(run_dir)
    for leftover in (run_dir / "checkpoints").glob(".*.pt.*"):  # temp files of a save that was killed
        leftover.unlink(missing_ok=True)
    s = build_setup(cfg)
    try:
        state = restore_state(payload, s.device)
        s.model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{run_dir / 'checkpoints' / 'last.pt'}: cannot resume from it, it does not fit the "
                              f"model and state of this config: {str(err).strip().splitlines()[0]}") from None
    if cfg != saved:
        write_config(run_dir, cfg)
        state.new_config = True
    state.resumed_from.append({"epoch": state.epoch, "step": state.step, "step_in_epoch": state.step_in_epoch})
    return train_epochs(s, run_dir, state, payload, observer or Observer(), started)


def read_run_config(run_dir: Path, force: bool) -> RunConfig:
    """The config.yaml of a run folder that can be resumed (one that has not finished, unless `force`)."""
    if not (run_dir / "config.yaml").is_file():
        raise Rnnl2Error(f"--resume {run_dir}: not a run folder (it has no config.yaml)")
    try:
        status = json.loads((run_dir / "summary.json").read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    if status in FINISHED and not force:
        raise Rnnl2Error(f"--resume {run_dir}: the run already finished ({status}); to train it further, "
                         "pass --force with a config that allows more (e.g. --set train.epochs=N)")
    return load_config(run_dir / "config.yaml")


def read_last_checkpoint(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "checkpoints" / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"--resume {run_dir}: there is no checkpoints/last.pt (output.save_checkpoints "
                              "is false, or the run stopped before its first checkpoint)")
    payload = load_checkpoint(path)
    if not isinstance(payload.get("resume"), dict) or not isinstance(payload.get("model"), dict):
        raise CheckpointError(f"{path}: holds no training state to resume from")
    return payload
