"""Stopping well: SIGINT/SIGTERM save last.pt and exit 130 (a second signal stops at once),
and a NaN/inf loss or gradient stops the run with status `diverged`, exit 1, best.pt intact."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from helpers import TINY_TAGGING, write_config
from rnnl2.cli import app
from rnnl2.config import validate_config
from rnnl2.runs import read_metrics
from rnnl2.checkpoints import load_checkpoint
from rnnl2.state import StopRequest
from rnnl2.train import Observer, TrainingDiverged, run
from rnnl2.setup import build_setup

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


pytestmark = pytest.mark.usefixtures("single_thread")
# Long enough that the signal always lands mid-training: 250 steps per epoch, 50 epochs.
LONG = copy.deepcopy(TINY_TAGGING) | {
    "name": "long",
    "data": {**TINY_TAGGING["data"], "num_train": 2000},
    "train": {"epochs": 50, "batch_size": 8, "checkpoint_every_steps": 20},
}


def start_training(folder: Path, name: str) -> tuple[subprocess.Popen, Path]:
    config = write_config(folder, LONG, f"{name}.yaml")
    run_dir = folder / name
    process = subprocess.Popen(
        [sys.executable, "-m", "rnnl2", "train", str(config), "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    return process, run_dir


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


SIGNALS = {"SIGINT": [signal.SIGINT], "SIGTERM": [signal.SIGTERM], "twice": [signal.SIGINT, signal.SIGINT]}


@pytest.fixture(scope="module")
def signalled(tmp_path_factory) -> dict[str, tuple[int, str, Path]]:
    """Three training subprocesses, started together; each gets its signal(s) once under way."""
    folder = tmp_path_factory.mktemp("signals")
    started = {name: start_training(folder, name) for name in SIGNALS}
    results = {}
    for name, (process, run_dir) in started.items():
        wait_for(run_dir / "checkpoints" / "last.pt", process)  # training is under way
        for sig in SIGNALS[name]:
            process.send_signal(sig)
    for name, (process, run_dir) in started.items():
        _, err = process.communicate(timeout=60)
        results[name] = (process.returncode, err, run_dir)
    return results


@pytest.mark.parametrize("name", list(SIGNALS))
def test_signal_saves_last_checkpoint_and_exits_130(signalled, name):
    code, err, run_dir = signalled[name]
    assert code == 130, err
    assert "Traceback" not in err and "--resume" in err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["resume_with"] == f"rnnl2 train --resume {run_dir}"
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    if name != "twice":  # one signal: the step in flight finishes and is saved
        assert last["step"] == summary["steps"]
    assert all(torch.isfinite(t).all() for t in last["model"].values())


def test_second_signal_raises_at_once():
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN under a background job
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signal == "SIGINT"  # the first only asks
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs before this returns
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


# ---------------------------------------------------------------------- divergence

EXPLODING = {
    "name": "boom",
    "device": "cpu",
    "data": {"kind": "sine", "lookback": 5, "horizon": 1, "num_train": 64, "num_val": 16, "num_test": 16},
    "model": {"hidden_size": 8},
    "optimizer": {"name": "sgd", "lr": 1.0e6},
    "train": {"epochs": 2, "batch_size": 16},
}


def test_exploding_run_exits_1_naming_epoch_and_step(tmp_path):
    config = write_config(tmp_path, EXPLODING)
    result = CliRunner().invoke(app, ["train", str(config), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert "diverged in epoch 1, steps 1–4" in result.output
    assert "optimizer.lr" in result.output and "clip_grad_norm" in result.output
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"


def test_nan_mid_epoch_stops_at_the_next_check_and_keeps_best(tmp_path, monkeypatch):
    """Weights turn NaN in epoch 2 at step 3 of 40: the run stops at step 5 of that epoch (the
    next device read), before any further checkpoint, so best.pt and last.pt stay finite."""
    monkeypatch.setattr("rnnl2.train.SYNC_EVERY", 5)
    raw = copy.deepcopy(LONG) | {"train": {"epochs": 3, "batch_size": 8, "checkpoint_every_steps": 100}}
    raw["data"]["num_train"] = 320
    setup = build_setup(validate_config(raw))

    class Poison(Observer):
        epoch = 0

        def on_epoch_start(self, epoch, steps):
            self.epoch = epoch

        def on_step(self, step, loss):
            if self.epoch == 2 and step == 3:
                with torch.no_grad():
                    setup.model.rnn.weight_hh_l0.fill_(math.nan)

    with pytest.raises(TrainingDiverged, match=r"epoch 2, steps 41–45 \(checked every 5 steps\)"):
        run(setup.cfg, run_dir=tmp_path / "run", observer=Poison(), setup=setup)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["best_epoch"] == 1
    for name in ("best.pt", "last.pt"):
        saved = load_checkpoint(tmp_path / "run" / "checkpoints" / name)
        assert all(torch.isfinite(t).all() for t in saved["model"].values()), name
        assert saved["step"] == 40, name
    assert [row["epoch"] for row in read_metrics(tmp_path / "run")] == [1]
