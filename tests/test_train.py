"""train.py: divergence never saves a non-finite weight, and a stop before the first checkpoint
leaves no folder behind."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from helpers import TINY_TAGGING, write_config
from rnnl2.cli import app

pytestmark = pytest.mark.usefixtures("single_thread")


# SGD with λ = 1e30: each step multiplies the weights by about −1e27, so they overflow to inf
# within two steps while every number the config holds is finite.
EXPLODING = ("--set", "optimizer.name=sgd", "--set", "optimizer.lr=0.001", "--set", "l2.lambda=1e30")


def train(*args: str):
    return CliRunner().invoke(app, ["train", *map(str, args)])


def all_finite(path: Path) -> bool:
    payload = torch.load(path, weights_only=True)
    return all(torch.isfinite(v).all() for v in payload["model"].values())


@pytest.mark.parametrize("epochs", [1, 3])
def test_exploding_weights_diverge_with_exit_1_and_saves_no_non_finite_weight(tmp_path, epochs):
    config = write_config(tmp_path, TINY_TAGGING)
    run_dir = tmp_path / "run"
    result = train(config, *EXPLODING, "--set", f"train.epochs={epochs}", "--run-dir", run_dir)
    assert result.exit_code == 1, result.output
    assert "diverged" in result.output and "Traceback" not in result.output
    assert "no checkpoint had been written yet" in result.output
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "diverged"
    assert not (run_dir / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize("epochs", [1, 3])
def test_divergence_on_an_epochs_last_step_is_diverged(tmp_path, epochs):
    """One step per epoch: the step's loss and gradient are finite, the weights it leaves are not usable."""
    config = write_config(tmp_path, TINY_TAGGING | {"optimizer": {"name": "sgd", "lr": 1e38}})
    run_dir = tmp_path / "run"
    result = train(config, "--set", "data.num_train=16", "--set", f"train.epochs={epochs}", "--run-dir", run_dir)
    assert result.exit_code == 1, result.output
    assert "diverged in epoch 1" in result.output and "Traceback" not in result.output
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "diverged"
    assert not (run_dir / "checkpoints").exists()


def test_divergence_after_a_checkpoint_keeps_the_last_finite_state(tmp_path):
    config = write_config(
        tmp_path, TINY_TAGGING | {"train": {"epochs": 1, "batch_size": 16}, "optimizer": {"name": "sgd"}}
    )
    run_dir = tmp_path / "run"
    assert train(config, "--run-dir", run_dir, "-q").exit_code == 0
    before = (run_dir / "checkpoints" / "last.pt").read_bytes()
    result = train("--resume", run_dir, "--force", "--set", "l2.lambda=1e30", "--set", "train.epochs=3")
    assert result.exit_code == 1 and "diverged in epoch 2" in result.output, result.output
    assert "last.pt keeps the last finite state, after step 4 (epoch 1)" in result.output
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == before
    assert all_finite(run_dir / "checkpoints" / "last.pt")


def test_sigterm_before_the_first_checkpoint_exits_130_and_leaves_no_folder(tmp_path, monkeypatch):
    import rnnl2.train

    real = rnnl2.train.train_epochs

    def terminated_at_start(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # the CLI's handler turns it into a stop
        return real(*args, **kwargs)

    monkeypatch.setattr(rnnl2.train, "train_epochs", terminated_at_start)
    config = write_config(tmp_path, TINY_TAGGING)
    handler_before = signal.getsignal(signal.SIGTERM)
    result = train(config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    assert not list((tmp_path / "runs").rglob("config.yaml"))
    assert signal.getsignal(signal.SIGTERM) is handler_before  # the handler was put back


def test_an_update_that_overflows_inside_the_optimizer_is_a_divergence(tmp_path):
    """Adam's first step size is lr / (1 - β₁) = 1e39 at lr 1e38: torch refuses to form it."""
    config = write_config(tmp_path, TINY_TAGGING | {"optimizer": {"name": "adam", "lr": 1e38}})
    result = train(config, "--run-dir", tmp_path / "run")
    assert result.exit_code == 1, result.output
    assert "an optimizer update is NaN or infinite" in result.output and "internal error" not in result.output


def test_naive_baselines_leave_the_model_and_every_random_state_alone():
    """Scored after the final evaluation, the baselines draw no random number and touch no weight,
    so a run's numbers are the same as before they existed."""
    import copy
    import random

    from rnnl2.config import validate_config
    from rnnl2.train import build_setup, naive_baselines

    setup = build_setup(validate_config(TINY_TAGGING))
    weights = copy.deepcopy(setup.model.state_dict())
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    scores = naive_baselines(setup)
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == python_state
    assert all(torch.equal(weights[k], v) for k, v in setup.model.state_dict().items())
    assert setup.model.training
    assert scores["baseline"] == "unigram" and set(scores["baselines"]["unigram"]) == {
        "val_loss",
        "val_accuracy",
        "test_loss",
        "test_accuracy",
    }
