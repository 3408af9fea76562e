"""Which parameters get L2 with which λ, and the penalty (λ/2)·Σθ² itself."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from rnnl2.config import ConfigError, L2Config, ModelConfig
from rnnl2.data import DataSpec
from rnnl2.models import build_model
from rnnl2.regularization import L2Group, L2Penalty, describe_selection, select_l2_parameters

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one torch thread

FEATURES = DataSpec(task="tagging", input_size=3, output_size=4)
TOKENS = DataSpec(task="lm", input_size=7, output_size=7, tokens=True)


def make_model(cell="lstm", spec=FEATURES, seed=0, **model) -> nn.Module:
    torch.manual_seed(seed)
    cfg = {"cell": cell, "hidden_size": 4, "num_layers": 2, "bidirectional": True, "embedding_dim": 3, **model}
    return build_model(ModelConfig(**cfg), spec)


def selected(model, **l2) -> dict[str, float]:
    """name → λ of every selected parameter."""
    groups = select_l2_parameters(model, L2Config(**l2))
    names = [n for g in groups for n in g.names]
    assert len(names) == len(set(names)), "a parameter sits in two groups"
    return {n: g.lam for g in groups for n in g.names}


def names_like(model, prefix: str) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith(prefix)}


# ---------------------------------------------------------------------- selection


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_weight_groups_never_select_biases(cell):
    model = make_model(cell, spec=TOKENS)
    assert set(selected(model, apply_to=["weight_ih"])) == names_like(model, "rnn.weight_ih_l")
    assert set(selected(model, apply_to=["weight_hh"])) == names_like(model, "rnn.weight_hh_l")
    assert len(names_like(model, "rnn.weight_ih_l")) == 4  # 2 layers × 2 directions
    default = selected(model, **{"lambda": 0.1})
    assert not any("bias" in name for name in default)
    assert set(default) == (names_like(model, "rnn.weight_") | {"embedding.weight", "head.weight"})


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_bias_group_selects_every_bias_and_the_head_bias(cell):
    model = make_model(cell)
    biases = set(selected(model, apply_to=["bias"]))
    assert biases == {n for n, _ in model.named_parameters() if "bias" in n}
    assert {"rnn.bias_ih_l0", "rnn.bias_hh_l0", "rnn.bias_hh_l1_reverse", "head.bias"} <= biases


def test_head_and_embedding_groups():
    model = make_model(spec=TOKENS)
    assert set(selected(model, apply_to=["head"])) == {"head.weight"}
    assert set(selected(model, apply_to=["embedding"])) == {"embedding.weight"}


def test_a_group_the_model_lacks_selects_nothing():
    assert selected(make_model(spec=FEATURES), apply_to=["embedding"]) == {}
    assert select_l2_parameters(make_model(), L2Config(apply_to=[])) == []


def test_glob_picks_both_directions_of_one_layer():
    model = make_model()
    assert set(selected(model, apply_to=["rnn.weight_ih_l0*"])) == {"rnn.weight_ih_l0", "rnn.weight_ih_l0_reverse"}
    assert set(selected(model, apply_to=["rnn.weight_ih_l0"])) == {"rnn.weight_ih_l0"}
    assert set(selected(model, apply_to=["rnn.*_reverse"])) == names_like(model, "rnn.") - {
        n for n in names_like(model, "rnn.") if not n.endswith("_reverse")
    }


@pytest.mark.parametrize(
    "l2",
    [{"apply_to": ["rnn.weight_ih_l5*"]}, {"apply_to": ["weight_hh", "heads"]}, {"lambdas": {"rnn.weight_xx*": 0.1}}],
)
def test_a_glob_matching_nothing_is_a_config_error(l2):
    with pytest.raises(ConfigError, match="matches no parameter") as info:
        select_l2_parameters(make_model(), L2Config(**l2))
    assert "rnn.weight_ih_l0" in str(info.value)  # the message lists what exists


def test_a_huge_selector_is_cut_short_in_the_message():
    with pytest.raises(ConfigError, match="matches no parameter") as info:
        select_l2_parameters(make_model(num_layers=64), L2Config(apply_to=["rnn.x*" + "y" * 5000]))
    assert len(str(info.value)) < 800 and "rnn.weight_ih_l0" in str(info.value)


def test_per_group_lambdas_override_lambda():
    model = make_model(num_layers=1, bidirectional=False)
    lams = selected(model, **{"lambda": 0.1, "lambdas": {"weight_hh": 0.5, "head.weight": 0.0}})
    assert lams == {"rnn.weight_ih_l0": 0.1, "rnn.weight_hh_l0": 0.5, "head.weight": 0.0}
    groups = select_l2_parameters(model, L2Config(**{"lambda": 0.1, "lambdas": {"weight_hh": 0.5}}))
    assert sorted(g.lam for g in groups) == [0.1, 0.5]


def test_lambdas_do_not_select_parameters_outside_apply_to():
    model = make_model(num_layers=1, bidirectional=False)
    lams = selected(model, **{"lambda": 0.1, "apply_to": ["weight_ih"], "lambdas": {"bias": 0.3}})
    assert lams == {"rnn.weight_ih_l0": 0.1}


def test_describe_selection_lists_every_parameter_in_order():
    model = make_model(num_layers=1, bidirectional=False)
    groups = select_l2_parameters(model, L2Config(**{"lambda": 0.2, "lambdas": {"head": 0.7}}))
    rows = describe_selection(model, groups)
    assert [r[0] for r in rows] == [n for n, _ in model.named_parameters()]
    table = {name: (shape, lam) for name, shape, lam in rows}
    assert table["rnn.weight_hh_l0"] == ((16, 4), 0.2)
    assert table["head.weight"] == ((4, 4), 0.7)
    assert table["rnn.bias_ih_l0"][1] is None


# ------------------------------------------------------------------------ penalty


def loop_penalty(model, lams: dict[str, float]) -> float:
    """(λ/2)·Σθ², one scalar at a time in float64, independent of the code under test."""
    total = 0.0
    for name, param in model.named_parameters():
        if name in lams:
            total += 0.5 * lams[name] * sum(float(x) ** 2 for x in param.detach().double().flatten().tolist())
    return total


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_penalty_equals_half_lambda_sum_of_squares(cell):
    model = make_model(cell, spec=TOKENS)
    l2 = {
        "lambda": 0.3,
        "apply_to": ["weight_ih", "weight_hh", "bias", "embedding", "head"],
        "lambdas": {"rnn.weight_hh_l1*": 2.0, "bias": 0.05},
    }
    groups = select_l2_parameters(model, L2Config(**l2))
    lams = selected(model, **l2)
    expected = loop_penalty(model, lams)
    assert L2Penalty(groups)().item() == pytest.approx(expected, rel=1e-5)
    squares = loop_penalty(model, {n: 2.0 for n in lams})  # (2/2)·Σθ² = Σθ²
    assert L2Penalty(groups).weight_norm().item() == pytest.approx(squares**0.5, rel=1e-5)


def test_penalty_gradient_is_lambda_theta():
    model = make_model(num_layers=1, bidirectional=False)
    groups = select_l2_parameters(model, L2Config(**{"lambda": 0.4, "lambdas": {"head": 1.5}}))
    L2Penalty(groups)().backward()
    lams = {n: g.lam for g in groups for n in g.names}
    for name, param in model.named_parameters():
        if name in lams:
            torch.testing.assert_close(param.grad, lams[name] * param.detach(), rtol=1e-5, atol=1e-7)
        else:
            assert param.grad is None


def test_added_gradient_equals_the_penalty_gradient():
    model = make_model(num_layers=2, bidirectional=False)
    groups = select_l2_parameters(model, L2Config(**{"lambda": 0.4, "lambdas": {"head": 1.5, "weight_hh": 0.0}}))
    penalty = L2Penalty(groups)
    penalty().backward()
    by_autograd = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    penalty.add_gradient_()
    added = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert added.keys() == {n for n, g in by_autograd.items() if g.abs().sum() > 0}  # λ = 0 parameters untouched
    assert any(n.startswith("head.") for n in added) and not any("weight_hh" in n for n in added)
    for name, grad in added.items():
        torch.testing.assert_close(grad, by_autograd[name], rtol=1e-6, atol=1e-8)
    data = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    for name, param in model.named_parameters():  # on top of an existing data gradient
        param.grad = data[name].clone()
    penalty.add_gradient_()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, data[name] + (by_autograd.get(name, 0) if name in added else 0))


def one_lambda(params: list[torch.Tensor], lam: float) -> L2Penalty:
    """The penalty of one λ over `params`, as training builds it from a selection."""
    return L2Penalty([L2Group(lam, tuple(f"p{i}" for i in range(len(params))), tuple(params))])


def test_l2_penalty_of_one_lambda():
    params = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    assert one_lambda(params, lam=0.5)().item() == pytest.approx(0.25 * 14)
    assert one_lambda(params, lam=0.5).weight_norm().item() == pytest.approx(14**0.5)
    assert one_lambda(params, lam=0.0)().item() == 0.0


def test_l2_penalty_of_two_lambdas_is_the_sum_of_each():
    first, second = [torch.tensor([1.0, 2.0])], [torch.tensor([[3.0]])]
    both = L2Penalty([L2Group(0.5, ("a",), tuple(first)), L2Group(2.0, ("b",), tuple(second))])
    assert both().item() == pytest.approx(0.25 * 5 + 1.0 * 9)


def test_empty_selection_has_zero_penalty():
    penalty = L2Penalty([])
    assert penalty().item() == 0.0 and penalty.weight_norm().item() == 0.0


@settings(deadline=None, max_examples=25)
@given(scale=st.floats(0.1, 10.0), lam=st.floats(1e-4, 10.0))
def test_penalty_scales_with_weights_squared(scale, lam):
    torch.manual_seed(0)
    params = list(nn.GRU(input_size=3, hidden_size=4).parameters())
    penalty = one_lambda(params, lam=lam)
    before = penalty()
    assert torch.isclose(before, lam * one_lambda(params, lam=1.0)(), rtol=1e-5)  # and linearly with λ
    with torch.no_grad():
        for p in params:
            p.mul_(scale)
    assert torch.isclose(penalty(), scale**2 * before, rtol=1e-4)
