"""`train.precision`: bf16 on the CPU trains and resumes exactly, with the logged penalty in fp32;
a gradient scaler leaves the L2 algebra exact (λ·θ joins the unscaled gradient) and a step it
skips is not a divergence; what torch cannot run is refused with exit 2."""

from __future__ import annotations

import copy

import pytest
import torch
from typer.testing import CliRunner

from helpers import TINY_TAGGING, write_config
from rnnl2.cli import app
from rnnl2.config import to_plain_dict, validate_config
from rnnl2.optim import build_optimizer
from rnnl2.precision import Precision
from rnnl2.regularization import L2Penalty
from rnnl2.train import Observer, read_running_loss, run, train_one_epoch
from rnnl2.setup import build_setup

pytestmark = pytest.mark.usefixtures("single_thread")

TIMING = ("seconds", "samples_per_s")


def config(**train):
    raw = copy.deepcopy(TINY_TAGGING)
    raw["train"] |= {"checkpoint_every_steps": 3, **train}
    raw["optimizer"] = {"name": "adam", "lr": 0.01}
    raw["l2"] = {"lambda": 0.01}
    return validate_config(raw)


def without_timing(rows):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def test_fp32_is_the_default_and_leaves_the_config_as_it_was():
    """No `precision` or `deterministic` key in a default config's dump: older configs keep their hash."""
    default, explicit = config(), config(precision="fp32", deterministic=False)
    assert default == explicit
    assert {"precision", "deterministic"}.isdisjoint(to_plain_dict(explicit)["train"])
    assert to_plain_dict(config(precision="bf16"))["train"]["precision"] == "bf16"


def test_bf16_trains_and_resumes_exactly(tmp_path):
    """bf16 autocast changes the numbers (the LSTM and head run in bf16), and a run stopped mid-epoch
    resumes to the uninterrupted run's metrics and weights bit for bit."""
    from rnnl2.resume import resume

    class Crash(Exception):
        pass

    class CrashAt(Observer):
        epoch = 0

        def on_epoch_start(self, epoch, steps):
            self.epoch = epoch

        def on_step(self, step, loss):
            if self.epoch == 2 and step == 3:  # last.pt from step 2 of epoch 2
                raise Crash

    cfg = config(precision="bf16")
    reference = run(cfg, run_dir=tmp_path / "reference")
    fp32 = run(config(), run_dir=tmp_path / "fp32")
    assert reference.summary["precision"] == "bf16" and reference.summary["status"] == "completed"
    assert reference.history[0]["train_data_loss"] != fp32.history[0]["train_data_loss"]
    with pytest.raises(Crash):
        run(cfg, run_dir=tmp_path / "crashed", observer=CrashAt())
    resumed = resume(tmp_path / "crashed")
    assert resumed.summary["resumed_from"][0]["step_in_epoch"] > 0
    assert without_timing(resumed.history) == without_timing(reference.history)
    expected = torch.load(tmp_path / "reference" / "checkpoints" / "last.pt", weights_only=True)["model"]
    got = torch.load(tmp_path / "crashed" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_logged_penalty_is_the_fp32_value(tmp_path):
    """The last row's penalty is (λ/2)·Σθ² of the final fp32 weights (to fp32 rounding, far below bf16's)."""
    result = run(config(precision="bf16"), run_dir=tmp_path / "run")
    model = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["model"]
    penalized = ("rnn.weight_ih_l0", "rnn.weight_hh_l0", "head.weight")
    exact = 0.5 * 0.01 * sum(model[name].double().square().sum().item() for name in penalized)
    assert result.history[-1]["penalty"] == pytest.approx(exact, rel=1e-6)
    assert result.history[-1]["weight_norm"] == pytest.approx((exact / 0.005) ** 0.5, rel=1e-6)


def train_with_scaler(mode: str, optimizer: str, scale: float | None) -> dict[str, torch.Tensor]:
    """Two epochs of the real loop (4 steps each, no clipping) with a GradScaler of `init_scale`."""
    raw = copy.deepcopy(TINY_TAGGING) | {"l2": {"lambda": 0.1, "mode": mode}}
    raw["optimizer"] = {"name": optimizer, "lr": 0.1 if optimizer == "sgd" else 0.01}
    s = build_setup(validate_config(raw))
    if scale is not None:
        s.precision = Precision("fp32", "cpu", torch.amp.GradScaler("cpu", init_scale=scale))
    opt = build_optimizer(s.model, s.cfg.optimizer, s.cfg.l2, s.groups)
    penalty, generator = L2Penalty(s.groups), torch.Generator().manual_seed(0)
    for _ in range(2):
        train_one_epoch(s, opt, penalty, generator, Observer(), float("inf"))
    return {n: p.detach().clone() for n, p in s.model.named_parameters()}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_penalty_equals_weight_decay_under_a_gradient_scaler(optimizer):
    """λ·θ is added after `unscale_`: with a loss scale of 1024 (a power of two, so scaling is exact)
    penalty mode equals weight_decay mode, and equals penalty mode without a scaler bit for bit.
    Adding λ·θ to the scaled gradient would shrink it 1024-fold."""
    penalty = train_with_scaler("penalty", optimizer, 1024.0)
    decay = train_with_scaler("weight_decay", optimizer, 1024.0)
    plain = train_with_scaler("penalty", optimizer, None)
    for name in penalty:
        assert torch.allclose(penalty[name], decay[name], atol=1e-6), name
        assert torch.equal(penalty[name], plain[name]), name


@pytest.mark.parametrize("mode", ["penalty", "decoupled"])
def test_steps_the_scaler_skips_are_not_a_divergence(mode):
    """An infinite loss scale makes every scaled gradient inf: every step is skipped (no update, no
    decoupled decay either), the finiteness read passes, the gradient-norm sum stays finite."""
    raw = copy.deepcopy(TINY_TAGGING) | {"l2": {"lambda": 0.1, "mode": mode}, "optimizer": {"name": "sgd"}}
    s = build_setup(validate_config(raw))
    s.precision = Precision("fp32", "cpu", torch.amp.GradScaler("cpu", init_scale=float("inf")))
    before = {n: p.detach().clone() for n, p in s.model.named_parameters()}
    opt = build_optimizer(s.model, s.cfg.optimizer, s.cfg.l2, s.groups)
    from rnnl2.state import TrainState

    state = TrainState()
    generator = torch.Generator().manual_seed(0)
    state.start_epoch(s.device, generator)
    stats = train_one_epoch(s, opt, L2Penalty(s.groups), generator, Observer(), float("inf"), state)
    read_running_loss(state, list(s.model.parameters()))  # raises TrainingDiverged on inf/NaN
    assert stats["steps"] == 4 and stats["grad_norm"] == 0.0
    assert all(torch.equal(p, before[n]) for n, p in s.model.named_parameters())


def test_fp16_gru_on_cpu_keeps_its_scaler_in_the_checkpoint(tmp_path):
    """torch runs a GRU under CPU fp16 autocast (the GRU itself stays fp32, the head is fp16); the
    scaler's state is in last.pt."""
    cfg = validate_config({**to_plain_dict(config(precision="fp16")), "model": {"cell": "gru", "hidden_size": 8}})
    result = run(cfg, run_dir=tmp_path / "gru")
    saved = torch.load(tmp_path / "gru" / "checkpoints" / "last.pt", weights_only=True)
    assert result.summary["status"] == "completed"
    assert saved["scaler"]["scale"] > 0 and saved["scaler"]["_growth_tracker"] == result.summary["steps"]


def test_fp16_lstm_on_cpu_is_refused_with_exit_2_and_no_folder(tmp_path):
    config_path = write_config(tmp_path, TINY_TAGGING)
    runs = tmp_path / "runs"
    result = CliRunner().invoke(
        app, ["train", str(config_path), "--runs-dir", str(runs), "--set", "train.precision=fp16"]
    )
    if result.exit_code == 0:
        pytest.skip("this torch runs an fp16 LSTM on the CPU")
    assert result.exit_code == 2, result.output
    assert "train.precision: fp16 LSTM does not run on cpu" in result.output
    assert "Traceback" not in result.output and not runs.exists()
