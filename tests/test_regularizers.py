"""The terms beside L2: AR/TAR against a hand computation (padding included), L1's gradient,
max-norm after every step, elastic net in the real loop, the metrics row, and the per-parameter
listing; each with the three L2 modes, and none of them in evaluation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from helpers import TINY_TAGGING
from rnnl2.config import (
    ConfigError,
    L1Config,
    L2Config,
    ModelConfig,
    RegularizationConfig,
    apply_overrides,
    validate_config,
)
from rnnl2.data import DataSpec
from rnnl2.evaluate import build_loss, evaluate
from rnnl2.models import build_model
from rnnl2.optim import build_optimizer
from rnnl2.regularization import L2Penalty, select_groups, select_l2_parameters
from rnnl2.regularizers import L1Penalty, activity_terms, build_terms, describe_terms
from rnnl2.train import Observer, run, train_one_epoch
from rnnl2.setup import build_setup

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one torch thread

FEATURES = DataSpec(task="tagging", input_size=3, output_size=4)


def make_model(cell="lstm", **model) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(**{"cell": cell, "hidden_size": 4, "num_layers": 2, **model}), FEATURES)


def make_config(*overrides: str):
    raw = copy.deepcopy(TINY_TAGGING)
    raw["optimizer"] = {"name": "sgd", "lr": 0.5}
    raw["l2"] = {"lambda": 0.0}
    return validate_config(apply_overrides(raw, list(overrides)))


def train_steps(cfg, epochs: int = 2, observer: Observer | None = None):
    """Parameters after `epochs` passes of the real loop, and each epoch's stats."""
    s = build_setup(cfg)
    optimizer = build_optimizer(s.model, cfg.optimizer, cfg.l2, s.groups)
    penalty = L2Penalty(s.groups)
    generator = torch.Generator().manual_seed(cfg.seed)
    stats = [
        train_one_epoch(s, optimizer, penalty, generator, observer or Observer(), float("inf")) for _ in range(epochs)
    ]
    return {n: p.detach().clone() for n, p in s.model.named_parameters()}, stats, s


# ------------------------------------------------------------------------ AR, TAR


def test_ar_and_tar_equal_a_hand_computation_over_the_valid_steps():
    """Two sequences of lengths 3 and 1 in a batch padded to 4 steps, 2 features."""
    dropped = torch.tensor(
        [[[1.0, 2.0], [0.0, 1.0], [3.0, 0.0], [9.0, 9.0]], [[2.0, 2.0], [7.0, 7.0], [7.0, 7.0], [7.0, 7.0]]]
    )
    steps = torch.tensor(
        [[[1.0, 1.0], [2.0, 3.0], [2.0, 1.0], [9.0, 9.0]], [[4.0, 0.0], [7.0, 7.0], [7.0, 7.0], [7.0, 7.0]]]
    )
    lengths = torch.tensor([3, 1])
    ar, tar = activity_terms(dropped, steps, lengths, ar=2.0, tar=0.5).tolist()
    # AR: the squares of the 4 valid steps (3 + 1), 8 numbers: (1+4 + 0+1 + 9+0 + 4+4) / 8
    assert ar == pytest.approx(2.0 * 23 / 8)
    # TAR: valid pairs (0,1), (1,2) of the first sequence only: ((1²+2²) + (0²+2²)) / (2 pairs · 2)
    assert tar == pytest.approx(0.5 * 9 / 4)
    # without lengths every step counts
    ar_all, tar_all = activity_terms(dropped, steps, None, ar=1.0, tar=1.0).tolist()
    assert ar_all == pytest.approx(dropped.square().mean().item())
    assert tar_all == pytest.approx((steps[:, 1:] - steps[:, :-1]).square().mean().item())


def test_activity_terms_are_differentiable_and_zero_when_off():
    steps = torch.randn(2, 5, 3, requires_grad=True)
    terms = activity_terms(steps * 2, steps, torch.tensor([5, 2]), ar=1.0, tar=1.0)
    terms.sum().backward()
    assert steps.grad[1, 2:].abs().sum() == 0  # padding gets no gradient
    assert steps.grad[0].abs().sum() > 0
    assert activity_terms(steps, steps, None, ar=0.0, tar=0.0).tolist() == [0.0, 0.0]


def test_ar_reads_the_dropped_outputs_and_tar_the_undropped_ones_of_the_last_layer():
    model = make_model(dropout=0.5, locked_dropout=True)
    terms = build_terms(model, L1Config(), RegularizationConfig(ar=1.0, tar=1.0))
    model.train()
    outputs, _ = model(torch.randn(2, 5, 3))
    dropped, steps = model.activations
    assert torch.equal(outputs, model.head(dropped))  # what the head saw
    assert (dropped == 0).any() and not (steps == 0).any()
    assert terms.activity(model, None).shape == (2,) and model.activations is None


# ---------------------------------------------------------------------------- L1


def test_l1_gradient_is_lambda_times_sign():
    model = make_model()
    with torch.no_grad():
        model.rnn.weight_ih_l0[0, 0] = 0.0  # sign(0) = 0
    groups = select_groups(model, ["weight_ih", "head"], {"head": 0.3}, 0.1, "l1")
    l1 = L1Penalty(groups)
    l1.add_gradient_()
    for group in groups:
        for param in group.params:
            assert torch.equal(param.grad, group.lam * torch.sign(param.detach()))
    assert model.rnn.weight_ih_l0.grad[0, 0] == 0
    value = sum(g.lam * sum(p.detach().abs().sum() for p in g.params) for g in groups)
    assert l1().item() == pytest.approx(value.item(), rel=1e-6)
    assert model.rnn.weight_hh_l0.grad is None  # outside apply_to


@pytest.mark.parametrize("mode", ["penalty", "weight_decay", "decoupled"])
def test_elastic_net_in_the_loop_is_sgd_on_data_loss_plus_both_penalties(mode):
    """The real loop (L2 in each mode, L1 as a gradient term) equals plain SGD on a hand-made gradient."""
    lr, lam, lam1 = 0.5, 0.05, 0.01
    cfg = make_config(f"l2.lambda={lam}", f"l2.mode={mode}", f"l1.lambda={lam1}")
    ours, _, _ = train_steps(cfg)
    s = build_setup(cfg)
    selected = {n for g in s.groups for n in g.names}
    named = dict(s.model.named_parameters())
    loss_fn = build_loss(s.spec.task)
    generator = torch.Generator().manual_seed(cfg.seed)
    for _ in range(2):
        for batch in s.train.batches(cfg.train.batch_size, generator):
            loss = loss_fn(s.model(batch.inputs, batch.lengths)[0], batch.targets)
            grads = torch.autograd.grad(loss, list(named.values()))
            with torch.no_grad():
                for (name, param), grad in zip(named.items(), grads):
                    if name in selected:
                        grad = grad + lam * param + lam1 * torch.sign(param)
                    param -= lr * grad
    for name in ours:
        torch.testing.assert_close(ours[name], named[name], atol=1e-6, rtol=0, msg=name)
    l2_only, _, _ = train_steps(make_config(f"l2.lambda={lam}", f"l2.mode={mode}"))
    assert max((ours[n] - l2_only[n]).abs().max() for n in ours) > 1e-3  # L1 really acted


# ---------------------------------------------------------------------- max-norm


class RowNorms(Observer):
    """Records the largest row norm of the constrained matrices after every step."""

    def __init__(self, model: nn.Module):
        self.model, self.largest = model, []

    def on_step(self, step, loss):
        norms = [p.detach().norm(dim=1).max().item() for n, p in self.model.named_parameters() if "weight" in n]
        self.largest.append(max(norms))


@pytest.mark.parametrize("mode", ["penalty", "weight_decay", "decoupled"])
def test_max_norm_holds_after_every_step(mode):
    c = 0.6
    cfg = make_config(
        "optimizer.lr=5.0", f"l2.mode={mode}", "l2.lambda=1e-3", f"regularization.max_norm={{value: {c}}}"
    )
    s = build_setup(cfg)
    observer = RowNorms(s.model)
    optimizer = build_optimizer(s.model, cfg.optimizer, cfg.l2, s.groups)
    generator = torch.Generator().manual_seed(cfg.seed)
    train_one_epoch(s, optimizer, L2Penalty(s.groups), generator, observer, float("inf"))
    assert len(observer.largest) == 4 and max(observer.largest) <= c * (1 + 1e-6)
    unconstrained = make_config("optimizer.lr=5.0", f"l2.mode={mode}", "l2.lambda=1e-3")
    s = build_setup(unconstrained)
    observer = RowNorms(s.model)
    optimizer = build_optimizer(s.model, unconstrained.optimizer, unconstrained.l2, s.groups)
    train_one_epoch(s, optimizer, L2Penalty(s.groups), torch.Generator().manual_seed(0), observer, float("inf"))
    assert max(observer.largest) > c  # without it the rows grow past c


# ----------------------------------------------------------- the loop and its rows


@pytest.mark.parametrize("mode", ["penalty", "weight_decay", "decoupled"])
def test_every_term_is_logged_and_train_loss_is_their_sum(tmp_path, mode):
    cfg = make_config(
        f"l2.mode={mode}",
        "l2.lambda=1e-3",
        "l1.lambda=1e-3",
        "regularization={ar: 2.0, tar: 1.0, max_norm: {value: 3.0}}",
        "model={cell: lstm, hidden_size: 8, num_layers: 2, dropout: 0.3, locked_dropout: true, weight_drop: 0.5}",
    )
    result = run(cfg, runs_dir=tmp_path)
    for row in result.history:
        assert list(row)[2:8] == ["train_data_loss", "penalty", "penalty_l1", "ar", "tar", "train_loss"]
        assert row["penalty_l1"] > 0 and row["ar"] > 0 and row["tar"] > 0
        parts = row["train_data_loss"] + row["penalty"] + row["penalty_l1"] + row["ar"] + row["tar"]
        assert row["train_loss"] == pytest.approx(parts, rel=1e-12)


def test_rows_without_the_new_terms_have_their_old_keys(tmp_path):
    (row, *_) = run(make_config("train.epochs=1"), runs_dir=tmp_path).history
    assert not {"penalty_l1", "ar", "tar"} & set(row)


def test_every_term_is_off_in_evaluation():
    """val/test metrics with every option on are those of the same weights with every option off."""
    options = "model={cell: lstm, hidden_size: 8, num_layers: 2, locked_dropout: true}"
    noisy = make_config(
        "model={cell: lstm, hidden_size: 8, num_layers: 2, locked_dropout: true, dropout: 0.5, "
        "input_dropout: 0.5, weight_drop: 0.5}",
        "l1.lambda=0.1",
        "regularization={ar: 2.0, tar: 1.0}",
    )
    quiet = make_config(options)
    noisy_setup, quiet_setup = build_setup(noisy), build_setup(quiet)
    quiet_setup.model.load_state_dict(noisy_setup.model.state_dict())
    for split in ("val", "test"):
        got = evaluate(noisy_setup.model, getattr(noisy_setup, split), "tagging", 8)
        assert got == evaluate(quiet_setup.model, getattr(quiet_setup, split), "tagging", 8)
    assert noisy_setup.model.activations is None


# ------------------------------------------------------------------- selection


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_l2_groups_select_the_per_layer_parameters_of_the_locked_layout(cell):
    fused, locked = make_model(cell, bidirectional=True), make_model(cell, bidirectional=True, locked_dropout=True)
    for group in ("weight_ih", "weight_hh", "bias"):
        names = [
            {n for g in select_l2_parameters(m, L2Config(apply_to=[group])) for n in g.names} for m in (fused, locked)
        ]
        # the same parameters, named per layer: rnn.weight_hh_l1_reverse ↔ rnn.1.weight_hh_l0_reverse
        assert len(names[0]) == len(names[1]) > 0
        renamed = {
            n.replace("rnn.1.", "rnn.").replace("_l0", "_l1") if n.startswith("rnn.1.") else n.replace("rnn.0.", "rnn.")
            for n in names[1]
        }
        assert renamed == names[0], group


def test_unknown_groups_are_config_errors_naming_the_section():
    model = make_model()
    with pytest.raises(ConfigError, match="^l1: 'weight_xx' matches no parameter"):
        build_terms(model, L1Config(**{"lambda": 0.1, "apply_to": ["weight_xx"]}), RegularizationConfig())
    with pytest.raises(ConfigError, match="^regularization.max_norm: 'kernel' matches no parameter"):
        build_terms(model, L1Config(), RegularizationConfig(max_norm={"value": 1.0, "apply_to": ["kernel"]}))


def test_describe_terms_lists_every_term_per_parameter():
    model = make_model(weight_drop=[0.5, 0.0])
    groups = select_l2_parameters(model, L2Config(**{"lambda": 0.2}))
    terms = build_terms(
        model,
        L1Config(**{"lambda": 0.01, "apply_to": ["weight_hh"]}),
        RegularizationConfig(max_norm={"value": 2.0, "apply_to": ["head"]}),
    )
    columns, rows = describe_terms(model, groups, terms)
    assert columns == ["λ", "λ₁", "max-norm", "weight-drop"]
    table = {name: values for name, _, values in rows}
    assert [name for name, *_ in rows] == [n for n, _ in model.named_parameters()]
    assert table["rnn.weight_hh_l0"] == [0.2, 0.01, None, 0.5]
    assert table["rnn.weight_hh_l1"] == [0.2, 0.01, None, None]
    assert table["head.weight"] == [0.2, None, 2.0, None]
    plain = make_model()
    plain_terms = build_terms(plain, L1Config(), RegularizationConfig())
    assert describe_terms(plain, select_l2_parameters(plain, L2Config()), plain_terms)[0] == ["λ"]


def test_a_run_with_every_term_evaluates_through_the_cli_with_every_dropout_off(tmp_path):
    """`rnnl2 eval` rebuilds the per-layer model from the saved config and scores it without any mask:
    twice the same number, and the summary's."""
    import json

    from typer.testing import CliRunner

    from helpers import write_config
    from rnnl2.cli import app

    raw = copy.deepcopy(TINY_TAGGING)
    raw["model"] |= {"num_layers": 2, "dropout": 0.3, "input_dropout": 0.2, "locked_dropout": True, "weight_drop": 0.5}
    raw |= {"l1": {"lambda": 1e-4}, "regularization": {"ar": 2.0, "tar": 1.0, "max_norm": {"value": 2.0}}}
    run_dir = tmp_path / "run"
    trained = CliRunner().invoke(app, ["train", str(write_config(tmp_path, raw)), "--run-dir", str(run_dir), "-q"])
    assert trained.exit_code == 0, trained.output
    records = [CliRunner().invoke(app, ["eval", str(run_dir), "--json", "--device", "cpu"]) for _ in range(2)]
    assert all(r.exit_code == 0 for r in records), records[0].output
    first, second = (json.loads(r.stdout) for r in records)
    assert first["test_loss"] == second["test_loss"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert first["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-6)
