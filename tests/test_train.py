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
    from rnnl2.setup import build_setup
    from rnnl2.run_records import naive_baselines

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


# ------------------------------------- issue 12: the defaults train exactly as before

SENTENCES = ["the cat sat on the mat", "a dog ran far away today", "birds fly", "we like green tea a lot", "rain again"]


def default_configs(folder: Path) -> dict[str, dict]:
    """Three runs the new regularizers must leave alone: fused 2-layer LSTM with dropout (features),
    a GRU classifier over padded token sequences, a stateful char LM."""
    import copy

    (folder / "lm.txt").write_text(" ".join(SENTENCES * 6) + "\n")
    (folder / "cls.tsv").write_text("".join(f"{i % 2}\t{s}\n" for i, s in enumerate(SENTENCES * 8)))
    tsv = {"format": "tsv", "header": False, "text_field": 1, "label_field": 0}
    classifier = {
        "cell": "gru",
        "hidden_size": 8,
        "embedding_dim": 4,
        "num_layers": 2,
        "dropout": 0.2,
        "pooling": "mean",
    }
    return {
        "tagging": copy.deepcopy(TINY_TAGGING) | {"model": {"hidden_size": 8, "num_layers": 2, "dropout": 0.3}},
        "classification": {
            "name": "cls",
            "device": "cpu",
            "data": {"kind": "text_classification", "path": str(folder / "cls.tsv"), **tsv},
            "model": classifier,
            "l2": {"lambda": 1e-3},
            "train": {"epochs": 2, "batch_size": 8},
        },
        "lm": {
            "name": "lm",
            "device": "cpu",
            "data": {"kind": "text_lm", "path": str(folder / "lm.txt"), "level": "char", "bptt": 6},
            "model": {"hidden_size": 8, "embedding_dim": 4, "num_layers": 2, "dropout": 0.2},
            "l2": {"lambda": 1e-3},
            "train": {"epochs": 2, "batch_size": 4},
        },
    }


# (train_data_loss, val_loss, penalty) per epoch, then test_loss, as float.hex(), recorded with the code
# before issue 12 (torch 2.13 CPU, one thread): the fused path, its RNG draws and the loop are unchanged.
RECORDED = {
    "tagging": (
        [
            ("0x1.1661ba0000000p+0", "0x1.12024cccccccdp+0", "0x1.2764b60000000p-6"),
            ("0x1.160a180000000p+0", "0x1.10f8b4ccccccdp+0", "0x1.20f3900000000p-6"),
        ],
        "0x1.10abdcccccccdp+0",
    ),
    "classification": (
        [
            ("0x1.64f9524924925p-1", "0x1.6a71c00000000p-1", "0x1.032a0a0000000p-4"),
            ("0x1.6911f00000000p-1", "0x1.6aafc80000000p-1", "0x1.0159dc0000000p-4"),
        ],
        "0x1.69384c0000000p-1",
    ),
    "lm": (
        [
            ("0x1.8a3e400000000p+1", "0x1.88a9800000000p+1", "0x1.03ac660000000p-4"),
            ("0x1.85b7e18618618p+1", "0x1.8648104a7904ap+1", "0x1.ef4d320000000p-5"),
        ],
        "0x1.8648104a7904ap+1",
    ),
}

EXPLICITLY_OFF = {
    "model": {"weight_drop": 0.0, "locked_dropout": False, "input_dropout": 0.0},
    "l1": {"lambda": 0.0},
    "regularization": {"ar": 0.0, "tar": 0.0},
}


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_default_configs_train_bitwise_as_before_the_new_regularizers(tmp_path, name):
    from rnnl2.config import validate_config
    from rnnl2.train import run

    raw = default_configs(tmp_path)[name]
    if torch.__version__.split("+")[0] != "2.13.0":
        pytest.skip("the recorded numbers are torch 2.13's; other versions round differently")
    result = run(validate_config(raw), runs_dir=tmp_path / "default")
    got = [(r["train_data_loss"].hex(), r["val_loss"].hex(), r["penalty"].hex()) for r in result.history]
    assert (got, result.summary["test_loss"].hex()) == (RECORDED[name][0], RECORDED[name][1])
    off = {**raw, **{key: {**raw.get(key, {}), **value} for key, value in EXPLICITLY_OFF.items()}}
    explicit = run(validate_config(off), runs_dir=tmp_path / "explicit")
    timing = ("seconds", "samples_per_s")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(explicit.history) == strip(result.history)
