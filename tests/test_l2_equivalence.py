"""The L2 modes, numerically: from identical initial states, a few steps of the real training
loop (`build_setup` → `build_optimizer` → `train_one_epoch`) give the parameters the algebra
says they should. See the README's (and docs/l2.md's) table "L2 regularization, exactly"."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from helpers import TINY_TAGGING
from rnnl2.config import RunConfig, apply_overrides, validate_config
from rnnl2.evaluate import build_loss
from rnnl2.optim import build_optimizer
from rnnl2.regularization import L2Penalty
from rnnl2.runs import read_metrics
from rnnl2.checkpoints import load_checkpoint
from rnnl2.train import Observer, run, train_one_epoch
from rnnl2.setup import build_setup

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one torch thread

LAMBDA = 0.1  # large, so every effect of L2 is far above the tolerance
LR = {"sgd": 0.1, "adam": 0.01, "adamw": 0.01, "rmsprop": 0.01, "adagrad": 0.1}
ATOL = 1e-6


def make_config(*overrides: str) -> RunConfig:
    """The tiny tagging config (LSTM, hidden 8, 64 sequences of 5 steps, batch 16, dropout 0)."""
    raw = copy.deepcopy(TINY_TAGGING)
    raw["l2"] = {"lambda": LAMBDA}
    name = next((o.split("=", 1)[1] for o in overrides if o.startswith("optimizer.name=")), "adam")
    raw["optimizer"] = {"name": name, "lr": LR[name]}
    return validate_config(apply_overrides(raw, list(overrides)))


def train_steps(
    cfg: RunConfig, epochs: int = 2, steps: float = float("inf")
) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Parameters after `epochs` passes (4 steps each) of the real loop, and each epoch's stats."""
    s = build_setup(cfg)
    optimizer = build_optimizer(s.model, cfg.optimizer, cfg.l2, s.groups)
    penalty = L2Penalty(s.groups)
    generator = torch.Generator().manual_seed(cfg.seed)
    stats = [train_one_epoch(s, optimizer, penalty, generator, Observer(), steps) for _ in range(epochs)]
    return {n: p.detach().clone() for n, p in s.model.named_parameters()}, stats


def hand_loop(cfg: RunConfig, make_optimizer, before_step=None, epochs: int = 2) -> dict[str, torch.Tensor]:
    """A reference loop written out here: data loss only, same init and batch order as the run."""
    s = build_setup(cfg)
    named = dict(s.model.named_parameters())
    selected = {n for g in s.groups for n in g.names}
    optimizer = make_optimizer(named, selected)
    loss_fn = build_loss(s.spec.task)
    generator = torch.Generator().manual_seed(cfg.seed)
    s.model.train()
    for _ in range(epochs):
        for batch in s.train.batches(cfg.train.batch_size, generator):
            loss = loss_fn(s.model(batch.inputs, batch.lengths)[0], batch.targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if before_step is not None:
                before_step(named, selected)
            optimizer.step()
    return {n: p.detach().clone() for n, p in named.items()}


def split_groups(named, selected, decay: float) -> list[dict]:
    return [
        {"params": [p for n, p in named.items() if n in selected], "weight_decay": decay},
        {"params": [p for n, p in named.items() if n not in selected], "weight_decay": 0.0},
    ]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[n] - b[n]).abs().max().item() for n in a)


def assert_same(a, b, atol=ATOL):
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=lambda m, name=name: f"{name}: {m}")


OPTIMIZERS = {
    "sgd": ["optimizer.name=sgd"],
    "sgd_momentum": ["optimizer.name=sgd", "optimizer.momentum=0.9"],
    "sgd_nesterov": ["optimizer.name=sgd", "optimizer.momentum=0.9", "optimizer.nesterov=true"],
    "adam": ["optimizer.name=adam"],
    "rmsprop": ["optimizer.name=rmsprop"],
    "rmsprop_momentum": ["optimizer.name=rmsprop", "optimizer.momentum=0.5"],
    "adagrad": ["optimizer.name=adagrad"],
}


def test_identical_configs_start_from_identical_states():
    first, _ = train_steps(make_config(), epochs=0)
    second, _ = train_steps(make_config("l2.mode=weight_decay"), epochs=0)
    assert all(torch.equal(first[n], second[n]) for n in first)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_penalty_equals_coupled_weight_decay(optimizer):
    penalty, _ = train_steps(make_config(*OPTIMIZERS[optimizer], "l2.mode=penalty"))
    decay, _ = train_steps(make_config(*OPTIMIZERS[optimizer], "l2.mode=weight_decay"))
    unregularized, _ = train_steps(make_config(*OPTIMIZERS[optimizer], "l2.lambda=0"))
    assert_same(penalty, decay)
    assert max_difference(penalty, unregularized) > 1e-3  # λ really acted


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_decoupled_with_adam_is_torch_adamw(name):
    cfg = make_config(f"optimizer.name={name}", "l2.mode=decoupled", "l2.lambdas={weight_hh: 0.3}")
    ours, _ = train_steps(cfg)

    def adamw(named, selected):
        lam = {"rnn.weight_hh_l0": 0.3}
        groups = [
            {"params": [p], "weight_decay": lam.get(n, LAMBDA) if n in selected else 0.0} for n, p in named.items()
        ]
        return torch.optim.AdamW(groups, lr=LR[name], betas=(0.9, 0.999), eps=1e-8)

    assert_same(ours, hand_loop(cfg, adamw))
    penalty, _ = train_steps(make_config(f"optimizer.name={name}", "l2.mode=penalty", "l2.lambdas={weight_hh: 0.3}"))
    assert max_difference(ours, penalty) > 1e-3  # decoupled ≠ penalty for adaptive optimizers


def test_decoupled_with_plain_sgd_equals_penalty():
    """θ(1 − lr·λ) − lr·g = θ − lr·(g + λθ): without momentum SGDW is SGD with L2."""
    decoupled, _ = train_steps(make_config("optimizer.name=sgd", "l2.mode=decoupled"))
    penalty, _ = train_steps(make_config("optimizer.name=sgd", "l2.mode=penalty"))
    assert_same(decoupled, penalty)


def test_decoupled_with_sgd_momentum_is_sgdw_and_differs_from_penalty():
    cfg = make_config("optimizer.name=sgd", "optimizer.momentum=0.9", "l2.mode=decoupled")
    decoupled, _ = train_steps(cfg)
    penalty, _ = train_steps(make_config("optimizer.name=sgd", "optimizer.momentum=0.9", "l2.mode=penalty"))
    assert max_difference(decoupled, penalty) > 1e-4

    def decay(named, selected):  # SGDW: the decay bypasses the momentum buffer
        with torch.no_grad():
            for n in selected:
                named[n].mul_(1 - LR["sgd"] * LAMBDA)

    sgd = lambda named, selected: torch.optim.SGD(named.values(), lr=LR["sgd"], momentum=0.9)
    assert_same(decoupled, hand_loop(cfg, sgd, decay))


def test_decoupled_with_rmsprop_decays_before_the_step():
    cfg = make_config("optimizer.name=rmsprop", "optimizer.momentum=0.5", "l2.mode=decoupled")
    decoupled, _ = train_steps(cfg)

    def decay(named, selected):
        with torch.no_grad():
            for n in selected:
                named[n].mul_(1 - LR["rmsprop"] * LAMBDA)

    rmsprop = lambda named, selected: torch.optim.RMSprop(
        named.values(), lr=LR["rmsprop"], alpha=0.99, eps=1e-8, momentum=0.5
    )
    assert_same(decoupled, hand_loop(cfg, rmsprop, decay))
    penalty, _ = train_steps(make_config("optimizer.name=rmsprop", "optimizer.momentum=0.5", "l2.mode=penalty"))
    assert max_difference(decoupled, penalty) > 1e-4


@pytest.mark.parametrize("mode", ["penalty", "weight_decay", "decoupled"])
def test_lambda_zero_is_no_regularization(mode):
    for optimizer in ("sgd", "adam"):
        cfg = make_config(
            f"optimizer.name={optimizer}",
            f"l2.mode={mode}",
            "l2.lambda=0",
            "optimizer.momentum=0" if optimizer == "adam" else "optimizer.momentum=0.9",
        )
        ours, _ = train_steps(cfg)
        if optimizer == "sgd":
            plain = lambda named, selected: torch.optim.SGD(named.values(), lr=LR["sgd"], momentum=0.9)
        else:
            plain = lambda named, selected: torch.optim.Adam(named.values(), lr=LR["adam"])
        reference = hand_loop(cfg, plain)
        assert_same(ours, reference, atol=1e-7)
        nothing, _ = train_steps(
            make_config(
                f"optimizer.name={optimizer}",
                f"l2.mode={mode}",
                "l2.apply_to=[]",
                "optimizer.momentum=0" if optimizer == "adam" else "optimizer.momentum=0.9",
            )
        )
        assert_same(ours, nothing, atol=1e-7)


@pytest.mark.parametrize("mode", ["penalty", "weight_decay", "decoupled"])
def test_parameters_outside_apply_to_evolve_as_without_l2(mode):
    """One SGD step: unselected parameters move exactly as with λ=0, selected ones by −lr·λ·θ₀ more.

    (After the first step the data gradient itself depends on the decayed weights, so later steps
    couple all parameters; one step isolates what L2 touches.)"""
    overrides = ["optimizer.name=sgd", f"l2.mode={mode}", "l2.apply_to=[weight_hh, head]"]
    start, _ = train_steps(make_config(*overrides), epochs=0)
    regularized, _ = train_steps(make_config(*overrides), epochs=1, steps=1)
    baseline, _ = train_steps(make_config(*overrides, "l2.lambda=0"), epochs=1, steps=1)
    for name in start:
        if name in ("rnn.weight_hh_l0", "head.weight"):
            torch.testing.assert_close(
                regularized[name] - baseline[name], -LR["sgd"] * LAMBDA * start[name], atol=1e-7, rtol=1e-4
            )
        else:
            assert torch.equal(regularized[name], baseline[name]), name
    several, _ = train_steps(make_config(*overrides), epochs=1)
    several_baseline, _ = train_steps(make_config(*overrides, "l2.lambda=0"), epochs=1)
    assert max_difference(several, several_baseline) > 1e-4


@pytest.mark.parametrize("mode", ["penalty", "weight_decay", "decoupled"])
def test_logged_penalty_matches_the_saved_weights(tmp_path, mode):
    """metrics.jsonl's `penalty` is (λ/2)·Σθ² of the selected weights in last.pt, in every mode."""
    lams = {"rnn.weight_ih_l0": 0.01, "rnn.weight_hh_l0": 0.05, "head.weight": 0.01}
    cfg = make_config(
        "optimizer.name=sgd",
        f"l2.mode={mode}",
        "l2.lambda=0.01",
        "l2.apply_to=[weight_ih, weight_hh, head]",
        "l2.lambdas={weight_hh: 0.05}",
    )
    result = run(cfg, tmp_path)
    rows = read_metrics(result.run_dir)
    assert len(rows) == cfg.train.epochs
    state = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")["model"]
    expected = sum(
        0.5 * lam * sum(x * x for x in state[name].double().flatten().tolist()) for name, lam in lams.items()
    )
    norm = sum(sum(x * x for x in state[name].double().flatten().tolist()) for name in lams) ** 0.5
    last = rows[-1]
    assert last["penalty"] == pytest.approx(expected, rel=1e-5)
    assert last["weight_norm"] == pytest.approx(norm, rel=1e-5)
    assert last["train_loss"] == pytest.approx(last["train_data_loss"] + last["penalty"], rel=1e-9)
    assert rows[0]["penalty"] != pytest.approx(last["penalty"], rel=1e-6)  # logged per epoch, not once
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["final"]["penalty"] == last["penalty"]


def test_lambda_zero_logs_zero_penalty(tmp_path):
    rows = read_metrics(run(make_config("l2.lambda=0"), tmp_path).run_dir)
    assert all(row["penalty"] == 0.0 for row in rows)
    assert all(row["weight_norm"] > 0 for row in rows)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_clipping_breaks_the_equivalence_once_the_bound_is_reached(optimizer):
    """clip_grad_norm scales the penalty's gradient λθ in penalty mode, never the optimizer's decay."""
    clipped = [f"optimizer.name={optimizer}", "train.clip_grad_norm=0.05"]
    penalty, stats = train_steps(make_config(*clipped, "l2.mode=penalty"))
    decay, _ = train_steps(make_config(*clipped, "l2.mode=weight_decay"))
    assert min(s["grad_norm"] for s in stats) > 0.05  # the bound is reached at every step
    assert max_difference(penalty, decay) > 1e-4

    loose = [f"optimizer.name={optimizer}", "train.clip_grad_norm=1e6"]
    penalty, stats = train_steps(make_config(*loose, "l2.mode=penalty"))
    decay, _ = train_steps(make_config(*loose, "l2.mode=weight_decay"))
    assert max(s["grad_norm"] for s in stats) < 1e6
    assert_same(penalty, decay)
