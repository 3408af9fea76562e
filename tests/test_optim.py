"""optim: one builder per optimizer name the schema allows, L2 placed as `l2.mode` says, and no
silent fallback to another optimizer."""

from __future__ import annotations

from typing import get_args

import pytest
import torch
from torch import nn

from rnnl2.config import L2Config, OptimizerConfig
from rnnl2.optim import OPTIMIZERS, build_optimizer
from rnnl2.regularization import L2Group

EXPECTED = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}


def tiny_model() -> tuple[nn.Module, list[L2Group]]:
    model = nn.Linear(3, 2)
    return model, [L2Group(0.1, ("weight",), (model.weight,))]


def test_every_schema_name_has_a_builder():
    assert set(get_args(OptimizerConfig.model_fields["name"].annotation)) == set(OPTIMIZERS) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("mode", ["penalty", "weight_decay"])
def test_each_name_builds_its_own_optimizer(name, mode):
    if (name, mode) == ("adamw", "weight_decay"):
        pytest.skip("refused by the config: adamw decays decoupled")
    model, groups = tiny_model()
    optimizer = build_optimizer(model, OptimizerConfig(name=name, lr=0.01), L2Config(mode=mode), groups)
    assert type(optimizer) is EXPECTED[name]
    decays = [g["weight_decay"] for g in optimizer.param_groups]
    assert decays == ([0.1, 0.0] if mode == "weight_decay" else [0.0, 0.0])  # penalized weight, then the bias
    assert optimizer.param_groups[0]["lr"] == 0.01


def test_decoupled_adam_is_torchs_adamw():
    model, groups = tiny_model()
    optimizer = build_optimizer(model, OptimizerConfig(name="adam"), L2Config(mode="decoupled"), groups)
    assert type(optimizer) is torch.optim.AdamW and optimizer.param_groups[0]["weight_decay"] == 0.1


def test_an_unknown_name_is_an_error_not_adagrad():
    model, groups = tiny_model()
    unchecked = OptimizerConfig.model_construct(**{**OptimizerConfig().model_dump(), "name": "lbfgs"})
    with pytest.raises(ValueError, match="lbfgs"):
        build_optimizer(model, unchecked, L2Config(), groups)
