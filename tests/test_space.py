"""space: parsing each kind of search space and refusing bad ones with the rule, seeded random
draws, the grid, and the same space spoken to Optuna."""

from __future__ import annotations

import math

import pytest

from rnnl2.errors import ConfigError
from rnnl2.search.space import (
    DIGITS,
    RULES,
    grid_params,
    grid_values,
    optuna_params,
    params_key,
    parse_space,
    parse_spaces,
    random_params,
    suggest,
)


def test_each_kind_parses():
    lam = parse_space("l2.lambda=0|loguniform(1e-7,1e-1)")
    assert (lam.key, lam.kind, lam.low, lam.high, lam.explicit, lam.spec) == (
        "l2.lambda",
        "loguniform",
        1e-7,
        0.1,
        (0,),
        "loguniform(1e-7,1e-1)",
    )
    assert parse_space("optimizer.lr=uniform(0.001,0.01)").kind == "uniform"
    size = parse_space("model.hidden_size=int(4,16)")
    assert (size.low, size.high) == (4, 16) and isinstance(size.low, int)
    mode = parse_space("l2.mode=choice(penalty,decoupled)")
    assert mode.choices == ("penalty", "decoupled")
    assert parse_space("l2.apply_to=choice([head],[weight_ih,head])").choices == (["head"], ["weight_ih", "head"])
    assert parse_space("l2.lambda=0|1e-3|loguniform(1e-6,1e-2)").explicit == (0, 1e-3)
    assert parse_space("model.hidden_size=int(8,8)").low == 8  # a ≤ b: one value is allowed


@pytest.mark.parametrize(
    "text, problem",
    [
        ("l2.lambda=loguniform(0,1e-1)", "0 < a < b"),
        ("l2.lambda=loguniform(1e-1,1e-3)", "0 < a < b"),
        ("optimizer.lr=uniform(0.1,0.1)", "a < b"),
        ("model.hidden_size=int(8,4)", "a ≤ b"),
        ("model.hidden_size=int(1.5,4)", "whole numbers"),
        ("l2.mode=choice()", "at least one value"),
        ("l2.mode=choice(penalty,penalty)", "twice"),
        ("l2.lambda=normal(0,1)", "not a distribution"),
        ("l2.lambda=1e-3", "not a distribution"),
        ("l2.lambda=loguniform(1e-3)", "two bounds"),
        ("l2.lambda=uniform(a,b)", "finite numbers"),
        ("l2.lambda=loguniform(1e-7,.inf)", "finite numbers"),
        ("l2.lambda=|loguniform(1e-7,1e-1)", "empty"),
        ("l2.mode=choice([a,)", "not a YAML value"),
        ("=uniform(0,1)", "KEY=SPEC"),
        ("l2.lambda", "KEY=SPEC"),
    ],
)
def test_bad_spaces_name_the_space_and_the_rule(text, problem):
    with pytest.raises(ConfigError) as caught:
        parse_space(text)
    message = str(caught.value)
    assert problem in message and RULES in message and message.startswith("--space")


def test_spaces_need_one_and_each_key_once():
    with pytest.raises(ConfigError, match="at least one --space"):
        parse_spaces([])
    with pytest.raises(ConfigError, match="given twice"):
        parse_spaces(["l2.lambda=uniform(0,1)", "l2.lambda=choice(0,1)"])


def test_random_draws_are_reproducible_by_seed_and_stay_in_bounds():
    spaces = parse_spaces(["l2.lambda=0|loguniform(1e-7,1e-1)", "model.hidden_size=int(4,16)", "l2.mode=choice(a,b)"])

    def draws(seed: int) -> list[dict]:
        taken, out = set(), []
        for index in range(30):
            out.append(random_params(spaces, seed, index, taken))
            taken.add(params_key(out[-1]))
        return out

    first = draws(0)
    assert first == draws(0) and first != draws(1)
    assert random_params(spaces, 0, 7) == random_params(spaces, 0, 7)  # trial i alone, without the others
    for params in first:
        lam = params["l2.lambda"]
        assert lam == 0 or (1e-7 <= lam <= 1e-1 and float(f"{lam:.{DIGITS}g}") == lam)
        assert 4 <= params["model.hidden_size"] <= 16 and isinstance(params["model.hidden_size"], int)
        assert params["l2.mode"] in ("a", "b")
    assert len({params_key(p) for p in first}) == 30  # a repeat is drawn again


def test_an_explicit_value_is_tried_once_not_in_half_the_trials():
    spaces = parse_spaces(["l2.lambda=0|loguniform(1e-7,1e-1)"])
    taken, lambdas = set(), []
    for index in range(40):
        params = random_params(spaces, 3, index, taken)
        taken.add(params_key(params))
        lambdas.append(params["l2.lambda"])
    assert lambdas.count(0) == 1 and 0 in lambdas[:5]
    logs = [math.log10(v) for v in lambdas if v > 0]
    assert min(logs) < -5 and max(logs) > -3  # spread over the log scale


def test_grid_is_the_product_of_each_space_s_points():
    assert grid_values(parse_space("l2.lambda=0|loguniform(1e-6,1e-2)"), 5) == [0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2]
    assert grid_values(parse_space("optimizer.lr=uniform(0.001,0.003)"), 3) == [0.001, 0.002, 0.003]
    assert grid_values(parse_space("model.hidden_size=int(4,6)"), 5) == [4, 5, 6]
    assert grid_values(parse_space("model.hidden_size=int(1,100)"), 3) == [1, 50, 100]
    assert grid_values(parse_space("l2.mode=penalty|choice(penalty,decoupled)"), 5) == ["penalty", "decoupled"]
    points = grid_params(parse_spaces(["l2.lambda=0|loguniform(1e-4,1e-2)", "l2.mode=choice(penalty,decoupled)"]), 3)
    assert len(points) == 4 * 2
    assert points[:3] == [
        {"l2.lambda": 0, "l2.mode": "penalty"},
        {"l2.lambda": 0, "l2.mode": "decoupled"},
        {"l2.lambda": 1e-4, "l2.mode": "penalty"},
    ]


def test_an_enqueued_optuna_trial_gives_back_the_same_parameters():
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spaces = parse_spaces(
        ["l2.lambda=0|loguniform(1e-7,1e-1)", "model.hidden_size=int(4,16)", "l2.apply_to=choice([head],[a,b])"]
    )
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    wanted = [random_params(spaces, 0, i) for i in range(6)] + [{**random_params(spaces, 0, 0), "l2.lambda": 0}]
    for params in wanted:
        study.enqueue_trial(optuna_params(spaces, params))
        assert suggest(study.ask(), spaces) == params
    free = suggest(study.ask(), spaces)  # nothing enqueued: TPE's own draw, inside the space
    assert free["l2.lambda"] == 0 or 1e-7 <= free["l2.lambda"] <= 1e-1
    assert free["l2.apply_to"] in (["head"], ["a", "b"])
