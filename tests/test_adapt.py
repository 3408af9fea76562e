"""Adaptive λ (`l2.adapt: hypergradient`): the hypergradient against finite differences, λ rising on
a task that over-fits and falling where λ = 0 is best, exact resume, the held-out part of the
training split, adapt off changing nothing, and bad settings refused with exit code 2."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from helpers import TINY_TAGGING, write_config
from rnnl2.adapt import build_adapter, hold_out
from rnnl2.cli import app
from rnnl2.config import apply_overrides, validate_config
from rnnl2.data import Split
from rnnl2.evaluate import build_loss
from rnnl2.optim import build_optimizer
from rnnl2.regularization import L2Penalty
from rnnl2.resume import resume
from rnnl2.runs import read_metrics
from rnnl2.checkpoints import CheckpointError
from rnnl2.state import check_resume_payload
from rnnl2.train import Observer, TrainingInterrupted, run, train_one_epoch
from rnnl2.setup import build_setup

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one torch thread

TIMING = ("seconds", "samples_per_s")

# 40 sequences of 10 steps (10 held out, 30 trained on) and a GRU of 48 units: the validation
# loss is lowest near epoch 15 at λ = 1e-4 and rises after; a fixed λ = 1e-2 does best.
OVERFITTING = {
    "name": "overfit",
    "seed": 0,
    "device": "cpu",
    "data": {"kind": "seed_tagging", "input_dim": 8, "num_classes": 4, "seq_len": 10, "num_train": 40, "num_val": 50},
    "model": {"cell": "gru", "hidden_size": 48},
    "l2": {"lambda": 1e-4, "adapt": {"method": "hypergradient", "every": 1, "lr": 0.2, "holdout": 0.25}},
    "optimizer": {"name": "adam", "lr": 0.01},
    "train": {"epochs": 40, "batch_size": 10},
    "output": {"save_checkpoints": False},
}


def config(raw: dict, *overrides: str):
    return validate_config(apply_overrides(copy.deepcopy(raw), list(overrides)))


def lambdas(history: list[dict]) -> list[float]:
    return [row["lambda"] for row in history]


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


# ------------------------------------------------------------------ what λ does


def test_lambda_rises_on_a_task_that_overfits(tmp_path):
    """From λ = 1e-4 the held-out loss pulls λ up once the model starts to memorise (≈ 0.23 at the end)."""
    result = run(config(OVERFITTING), runs_dir=tmp_path)
    trajectory = lambdas(result.history)
    assert trajectory[-1] > 30 * 1e-4, trajectory
    assert max(trajectory[-10:]) > 1e-3  # and it stays up
    assert result.summary["lambda_trajectory"] == trajectory
    assert result.summary["lambda_final"] == trajectory[-1]


def test_lambda_falls_where_no_regularization_is_best(tmp_path):
    """Plenty of data and 8 hidden units: nothing to over-fit, and λ = 1e-2 falls (to ≈ 1.7e-3)."""
    cfg = config(
        OVERFITTING,
        "data.num_train=800",
        "model.hidden_size=8",
        "l2.lambda=0.01",
        "l2.adapt.lr=0.1",
        "train.epochs=3",
        "train.batch_size=20",
    )
    trajectory = lambdas(run(cfg, runs_dir=tmp_path).history)
    assert trajectory[-1] < 0.01 / 3, trajectory
    assert trajectory == sorted(trajectory, reverse=True)


def test_adapt_off_is_the_run_without_the_key(tmp_path):
    """`adapt: none` writes the same config, trains the same weights and logs the same numbers as a
    config without the key: no held-out part, no λ column, nothing extra in last.pt."""
    raw = copy.deepcopy(TINY_TAGGING) | {"model": {"cell": "lstm", "hidden_size": 8, "num_layers": 2, "dropout": 0.3}}
    runs = []
    for name, l2 in (("absent", {"lambda": 1e-3}), ("none", {"lambda": 1e-3, "adapt": "none"})):
        runs.append(run(config(raw | {"l2": l2}), run_dir=tmp_path / name).run_dir)
    rows = [read_metrics(d) for d in runs]
    assert without_timing(rows[0]) == without_timing(rows[1])
    assert not any(k.startswith("lambda") for row in rows[1] for k in row)
    checkpoints = [torch.load(d / "checkpoints" / "last.pt", weights_only=True) for d in runs]
    assert all(torch.equal(checkpoints[0]["model"][k], checkpoints[1]["model"][k]) for k in checkpoints[0]["model"])
    assert "adapt" not in checkpoints[1]["resume"] and "adapt" not in checkpoints[1]["config"]["l2"]
    assert (runs[0] / "config.yaml").read_text() == (runs[1] / "config.yaml").read_text()
    summary = json.loads((runs[1] / "summary.json").read_text())
    assert "lambda_trajectory" not in summary and "lambda_final" not in summary


# ----------------------------------------------------------- the hypergradient


def in_double(s):
    """The setup in float64, so a finite difference resolves the derivative to many digits."""
    s.model.double()
    as_double = lambda split: replace(split, inputs=split.inputs.double())  # noqa: E731
    val = as_double(s.val)
    holdout = val if s.holdout is s.val else as_double(s.holdout)
    return replace(s, train=as_double(s.train), val=val, holdout=holdout)


def one_step(cfg):
    """(L_held after one real training step, the adapter's dL_held/dλ for that step)."""
    s = in_double(build_setup(cfg))
    optimizer = build_optimizer(s.model, cfg.optimizer, cfg.l2, s.groups)
    penalty = L2Penalty(s.groups)
    adapter = build_adapter(cfg.l2, cfg.optimizer, s.groups, penalty, optimizer, s.holdout, s.spec.task, 16)
    before = adapter.snapshot()
    train_one_epoch(s, optimizer, penalty, torch.Generator().manual_seed(cfg.seed), Observer(), 1)
    batch = adapter.held_out_batch(0)
    with torch.no_grad():
        loss = build_loss(s.spec.task)(s.model(batch.inputs, batch.lengths, None)[0], batch.targets).item()
    return loss, adapter.hypergradients(s.model, before, 0).item()


@pytest.mark.parametrize(
    "overrides",
    [
        ["optimizer.name=sgd", "l2.mode=penalty"],
        ["optimizer.name=sgd", "l2.mode=decoupled"],
        ["optimizer.name=sgd", "optimizer.momentum=0.9", "l2.mode=weight_decay"],
        ["optimizer.name=adamw", "optimizer.lr=0.01", "l2.mode=decoupled"],
        ["optimizer.name=sgd", "l2.mode=penalty", "l2.adapt.holdout=val"],
    ],
    ids=["sgd-penalty", "sgd-decoupled", "sgd-momentum-weight_decay", "adamw-decoupled", "sgd-penalty-val"],
)
def test_hypergradient_matches_a_finite_difference(overrides):
    """θ₊ is linear in λ in these modes, so −η·⟨∇L_held(θ₊), d⟩ is the exact derivative of the
    held-out loss after the step: a central difference in λ agrees to 1e-6."""
    raw = copy.deepcopy(TINY_TAGGING) | {"optimizer": {"name": "sgd", "lr": 0.5}}
    lam, delta = 0.1, 1e-4
    settings = ["l2.adapt.method=hypergradient", "l2.adapt.holdout=0.25", *overrides]
    loss, hypergradient = one_step(config(raw, f"l2.lambda={lam}", *settings))
    above, _ = one_step(config(raw, f"l2.lambda={lam + delta}", *settings))
    below, _ = one_step(config(raw, f"l2.lambda={lam - delta}", *settings))
    finite_difference = (above - below) / (2 * delta)
    assert abs(hypergradient) > 1e-5  # a real signal, not two zeros agreeing
    assert hypergradient == pytest.approx(finite_difference, rel=1e-6, abs=1e-9)
    assert below > loss > above or below < loss < above  # the loss moves monotonically through λ


def test_implicit_hypergradient_is_the_implicit_function_theorem_solved_exactly():
    """With H positive definite (λ = 0.5 dominates the data Hessian here), 50 Neumann terms of
    finite-difference H·v give −θᵀ(∇²L_data + λI)⁻¹∇L_held as a dense solve does, to 1e-3."""
    from torch.func import functional_call

    lam = 0.5
    cfg = config(
        copy.deepcopy(TINY_TAGGING) | {"optimizer": {"name": "sgd", "lr": 0.1}},
        f"l2.lambda={lam}",
        "l2.adapt.method=hypergradient",
        "l2.adapt.horizon=implicit",
        "l2.adapt.terms=50",
    )
    s = in_double(build_setup(cfg))
    optimizer = build_optimizer(s.model, cfg.optimizer, cfg.l2, s.groups)
    adapter = build_adapter(cfg.l2, cfg.optimizer, s.groups, L2Penalty(s.groups), optimizer, s.holdout, s.spec.task, 16)
    assert adapter.holdout is s.holdout and s.holdout is s.val  # the validation split, by default
    batch = next(iter(s.train.batches(16)))
    got = adapter.implicit_hypergradients(s.model, batch, 0).item()

    names = {id(p): n for n, p in s.model.named_parameters()}
    keys, shapes = [names[id(p)] for p in adapter.params], [p.shape for p in adapter.params]
    theta = torch.cat([p.detach().flatten() for p in adapter.params])
    loss_fn = build_loss(s.spec.task)

    def loss(flat, b):
        weights = {
            k: x.view(shape) for k, x, shape in zip(keys, flat.split([p.numel() for p in adapter.params]), shapes)
        }
        return loss_fn(functional_call(s.model, weights, (b.inputs, b.lengths, None))[0], b.targets)

    hessian = torch.autograd.functional.hessian(lambda f: loss(f, batch), theta)
    hessian += lam * torch.eye(len(theta), dtype=theta.dtype)
    assert torch.linalg.eigvalsh(hessian)[0] > 0
    held = torch.autograd.functional.jacobian(lambda f: loss(f, adapter.held_out_batch(0)), theta)
    exact = -(theta @ torch.linalg.solve(hessian, held)).item()
    assert abs(exact) > 1e-3 and got == pytest.approx(exact, rel=1e-3)


def test_start_at_plateau_keeps_lambda_until_validation_stops_improving(tmp_path):
    """λ stays at l2.lambda while every epoch's validation loss beats the ones before, and moves
    from the first that does not."""
    cfg = config(OVERFITTING, "l2.adapt.start=plateau", "l2.adapt.holdout=val", "train.epochs=25")
    result = run(cfg, runs_dir=tmp_path)
    losses, trajectory = [r["val_loss"] for r in result.history], lambdas(result.history)
    first = next(i for i in range(1, len(losses)) if losses[i] >= min(losses[:i]))
    assert trajectory[: first + 1] == pytest.approx([1e-4] * (first + 1), rel=1e-12)  # that epoch ran at λ₀
    assert trajectory[-1] != pytest.approx(1e-4) and first < len(losses) - 2


# ----------------------------------------------------------------------- resume

RESUMABLE = copy.deepcopy(TINY_TAGGING) | {
    "name": "resumable",
    "data": {**TINY_TAGGING["data"], "num_train": 96},  # 72 trained on, 24 held out: 9 steps of 8
    "model": {"cell": "lstm", "hidden_size": 8, "num_layers": 2, "dropout": 0.3},
    "l2": {
        "lambda": 1e-2,
        "adapt": {"method": "hypergradient", "every": 2, "lr": 0.2, "holdout": 0.25, "per_group": True},
    },
    "optimizer": {"name": "adam", "lr": 0.01},
    "train": {"epochs": 3, "batch_size": 8, "checkpoint_every_steps": 4},
}


class StopAt(Observer):
    """Ctrl-C at once (a second signal) after step `step` of epoch `epoch`: last.pt stays at the
    last mid-epoch checkpoint, which lies between two λ updates."""

    def __init__(self, epoch: int, step: int):
        self.epoch, self.step, self.current = epoch, step, 0

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        self.current = epoch

    def on_step(self, step: int, loss: float | None) -> None:
        if (self.current, step) == (self.epoch, self.step):
            raise KeyboardInterrupt


def test_a_resumed_implicit_plateau_run_on_validation_adapts_exactly_like_an_unbroken_run(tmp_path):
    """The validation hyper-loss, the implicit horizon and the plateau start, paused after epoch
    4 and resumed: the same λ, metrics and weights as the run that never paused."""
    raw = copy.deepcopy(RESUMABLE)
    raw["l2"]["adapt"] = {"method": "hypergradient", "every": 2, "lr": 0.2, "holdout": "val"}
    raw["l2"]["adapt"] |= {"horizon": "implicit", "terms": 2, "start": "plateau"}
    raw["data"] |= {"num_train": 48, "num_val": 8}
    raw["optimizer"] |= {"lr": 0.1}
    raw["train"] |= {"epochs": 8}  # epoch 3 does not beat epoch 2: λ moves from then on
    cfg = config(raw)
    reference = run(cfg, run_dir=tmp_path / "reference")
    assert len(set(lambdas(reference.history))) > 1  # λ moved after a plateau
    paused = run(cfg, run_dir=tmp_path / "paused", pause_after=4)  # the resume must know λ started
    assert paused.summary["status"] == "paused"
    resume(paused.run_dir)
    assert without_timing(read_metrics(paused.run_dir)) == without_timing(read_metrics(reference.run_dir))
    weights = torch.load(reference.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    got = torch.load(paused.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(weights[name], got[name]) for name in weights)


def test_resumed_runs_adapt_exactly_like_an_unbroken_run(tmp_path):
    """Paused after epoch 1, or stopped mid-epoch 2 (last.pt after step 12, λ updated at 10 and 12),
    then resumed: the same λ per group, metrics and weights as the run that never stopped."""
    cfg = config(RESUMABLE)
    reference = run(cfg, run_dir=tmp_path / "reference")
    paused = run(cfg, run_dir=tmp_path / "paused", pause_after=1)
    assert paused.summary["status"] == "paused"
    resume(paused.run_dir)
    with pytest.raises(TrainingInterrupted):
        run(cfg, run_dir=tmp_path / "stopped", observer=StopAt(epoch=2, step=7))
    stopped_at = torch.load(tmp_path / "stopped" / "checkpoints" / "last.pt", weights_only=True)
    assert (stopped_at["step"], stopped_at["resume"]["adapt"]["updates"]) == (12, 6)
    resume(tmp_path / "stopped")
    expected = without_timing(read_metrics(reference.run_dir))
    assert {k for k in expected[0] if k.startswith("lambda")} == {"lambda/weight_ih", "lambda/weight_hh", "lambda/head"}
    assert expected[-1]["lambda/weight_hh"] != 1e-2  # λ moved
    weights = torch.load(reference.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    for run_dir in (tmp_path / "paused", tmp_path / "stopped"):
        assert without_timing(read_metrics(run_dir)) == expected, run_dir.name
        got = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
        assert all(torch.equal(weights[name], got[name]) for name in weights), run_dir.name
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["lambda_trajectory"] == reference.summary["lambda_trajectory"]
        assert set(summary["lambda_final"]) == {"weight_ih", "weight_hh", "head"}

    stopped_at["resume"]["adapt"]["moments"] = [[0.0, -1.0]] * 3  # a negative second moment
    with pytest.raises(CheckpointError, match="resume.adapt must be an adaptive-λ state"):
        check_resume_payload(stopped_at)


# ------------------------------------------------------------- the held-out part


def test_hold_out_is_disjoint_seeded_and_leaves_the_rest_in_order():
    inputs = torch.arange(40.0).view(20, 2, 1)
    split = Split(inputs, torch.arange(20), torch.full((20,), 2))
    rest, held = hold_out(split, 0.25, seed=7)
    assert (len(rest), len(held)) == (15, 5)
    rows = lambda s: s.targets.tolist()  # noqa: E731
    assert sorted(rows(rest) + rows(held)) == list(range(20))
    assert rows(rest) == sorted(rows(rest))
    assert rows(hold_out(split, 0.25, seed=7)[1]) == rows(held)
    assert rows(hold_out(split, 0.25, seed=8)[1]) != rows(held)
    assert torch.equal(held.inputs[:, 0, 0], held.targets * 2.0) and held.lengths.tolist() == [2] * 5


def test_hold_out_of_a_token_stream_is_its_tail():
    from rnnl2.data.text import StreamSplit

    stream = torch.arange(100)
    head, tail = hold_out(StreamSplit(stream, stream, bptt=5), 0.1, seed=0)
    assert head.inputs.tolist() == list(range(90)) and tail.inputs.tolist() == list(range(90, 100))
    held_targets = {t for b in tail.batches(4) for t in b.targets.flatten().tolist() if t >= 0}
    trained_targets = {t for b in head.batches(4) for t in b.targets.flatten().tolist() if t >= 0}
    assert not held_targets & trained_targets


def test_hold_out_of_forecast_windows_shares_no_row():
    from rnnl2.data.series import cut_windows

    rows = torch.arange(50.0).view(50, 1)
    windows = cut_windows(rows, rows, lookback=4, horizon=2, stride=1)  # 45 windows
    rest, held = hold_out(windows, 0.2, seed=0)
    assert len(held) == 9
    trained = set(rest.inputs.flatten().tolist()) | set(rest.targets.flatten().tolist())
    held_rows = set(held.inputs.flatten().tolist()) | set(held.targets.flatten().tolist())
    assert not trained & held_rows
    assert max(trained) + 1 == min(held_rows)  # and drops no more than it must


def test_the_hyper_loss_reads_the_validation_split_by_default_and_trains_on_everything():
    plain, adapted = build_setup(config(TINY_TAGGING)), build_setup(config(TINY_TAGGING, "l2.adapt=hypergradient"))
    assert adapted.cfg.l2.adapt.holdout == "val" and adapted.holdout is adapted.val
    assert torch.equal(plain.train.inputs, adapted.train.inputs) and torch.equal(plain.val.inputs, adapted.val.inputs)


@pytest.mark.parametrize("holdout", [["l2.adapt.holdout=train"], ["l2.adapt.holdout=0.1"]], ids=["train", "number"])
def test_the_held_out_part_comes_from_the_training_split(holdout):
    """Training sees fewer sequences; validation and test are the same as without adapt (a bare
    number, the older form, is `train` with that fraction)."""
    plain = build_setup(config(TINY_TAGGING))
    adapted = build_setup(config(TINY_TAGGING, "l2.adapt.method=hypergradient", *holdout))
    assert adapted.cfg.l2.adapt.holdout == "train" and adapted.cfg.l2.adapt.holdout_fraction == 0.1
    assert (len(plain.train), len(adapted.train), len(adapted.holdout)) == (64, 58, 6)
    assert torch.equal(plain.val.inputs, adapted.val.inputs) and torch.equal(plain.test.inputs, adapted.test.inputs)
    whole = {tuple(x.flatten().tolist()) for x in plain.train.inputs}
    trained = {tuple(x.flatten().tolist()) for x in adapted.train.inputs}
    held = {tuple(x.flatten().tolist()) for x in adapted.holdout.inputs}
    assert trained | held == whole and not trained & held


# ------------------------------------------------------------------- the config


def test_shorthand_and_per_group_selection(tiny_config):
    result = CliRunner().invoke(app, ["config", "show", str(tiny_config), "--set", "l2.adapt=hypergradient"])
    assert result.exit_code == 0, result.output
    assert "method: hypergradient" in result.output and "every: 10" in result.output
    s = build_setup(config(TINY_TAGGING, "l2.adapt.method=hypergradient", "l2.adapt.per_group=true"))
    assert [g.label for g in s.groups] == ["weight_ih", "weight_hh", "head"]
    assert [len(g.params) for g in build_setup(config(TINY_TAGGING)).groups] == [3]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["l2.lambda=0"], "l2: lambda is 0, but with adapt on it must lie in [adapt.min_lambda"),
        (["l2.lambdas={head: 2.0}"], "l2: lambdas.head is 2, but with adapt on"),
        (["l2.apply_to=[]"], "l2: adapt needs penalized parameters"),
        (["l2.adapt.method=hyper"], "l2.adapt.method: input should be 'none' or 'hypergradient'"),
        (["l2.adapt.min_lambda=1", "l2.adapt.max_lambda=0.5"], "l2.adapt: min_lambda (1) must be below max_lambda"),
        (["l2.adapt.holdout=1"], "l2.adapt.holdout_fraction: input should be less than 1"),
        (["l2.adapt.holdout=test"], "l2.adapt.holdout: input should be 'val' or 'train'"),
        (["l2.adapt.every=0"], "l2.adapt.every: input should be greater than or equal to 1"),
        (["l2.adapt.evry=3"], "l2.adapt.evry: unknown key; did you mean 'every'?"),
        (
            ["data.num_train=1", "l2.adapt.holdout=train"],
            "l2.adapt.holdout_fraction: the training split has 1 sequence; nothing to hold out",
        ),
    ],
)
def test_bad_adapt_settings_exit_2(tmp_path, overrides, message):
    path = write_config(
        tmp_path, copy.deepcopy(TINY_TAGGING) | {"l2": {"lambda": 1e-3, "adapt": {"method": "hypergradient"}}}
    )
    argv = ["train", str(path), "--runs-dir", str(tmp_path / "runs")]
    result = CliRunner().invoke(app, [*argv, *(a for o in overrides for a in ("--set", o))])
    assert result.exit_code == 2, result.output
    assert message in result.output.replace("\n", " ") and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("metrics.jsonl"))


def test_lambda_stays_within_its_bounds(tmp_path):
    """min_lambda stops a λ that the task without over-fitting would push lower."""
    cfg = config(
        OVERFITTING,
        "data.num_train=800",
        "model.hidden_size=8",
        "l2.lambda=0.01",
        "l2.adapt.min_lambda=5e-3",
        "train.epochs=2",
        "train.batch_size=20",
    )
    trajectory = lambdas(run(cfg, runs_dir=tmp_path).history)
    assert trajectory[-1] == pytest.approx(5e-3, rel=1e-9), trajectory


def test_a_damaged_adapt_state_is_named(tmp_path):
    cfg = config(RESUMABLE, "train.epochs=1")
    run_dir = run(cfg, run_dir=tmp_path / "run").run_dir
    payload = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    check_resume_payload(payload)
    payload["resume"]["adapt"]["log_lambda"] = ["x", 1.0, 2.0]
    with pytest.raises(CheckpointError, match="resume.adapt"):
        check_resume_payload(payload)


def test_report_draws_the_adapted_lambda(tmp_path):
    from rnnl2.report import write_report

    run(config(RESUMABLE, "train.epochs=2"), run_dir=tmp_path / "runs" / "adapted")
    files = write_report([tmp_path / "runs"], tmp_path / "report")
    assert "lambda_trajectory" in [f.stem for f in files.figures]
    assert Path(tmp_path / "report" / "lambda_trajectory.png").stat().st_size > 0
