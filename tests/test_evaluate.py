"""evaluate.py logs exactly the metrics that metrics.py names for each task, so the config's
early-stopping check, compare and sweep never disagree with what a run writes."""

from __future__ import annotations

import copy

import pytest

from helpers import TINY_TAGGING
from rnnl2.config import validate_config
from rnnl2.evaluate import evaluate
from rnnl2.metrics import METRICS, TASK_OF_KIND, default_mode, validation_metrics
from rnnl2.setup import build_setup

pytestmark = pytest.mark.usefixtures("single_thread")

SYNTHETIC = {
    "seed_tagging": TINY_TAGGING["data"],
    "sine": {"kind": "sine", "num_train": 32, "num_val": 8, "num_test": 8, "lookback": 6, "horizon": 2},
    "adding": {"kind": "adding", "num_train": 32, "num_val": 8, "num_test": 8, "seq_len": 6},
}


@pytest.mark.parametrize("kind", list(SYNTHETIC))
def test_evaluate_logs_exactly_the_metrics_of_the_task(kind):
    raw = copy.deepcopy(TINY_TAGGING) | {"data": SYNTHETIC[kind]}
    setup = build_setup(validate_config(raw))
    assert setup.spec.task == TASK_OF_KIND[kind]
    logged = evaluate(setup.model, setup.val, setup.spec.task, 16)
    assert sorted(logged) == sorted(METRICS[setup.spec.task])
    assert validation_metrics(kind) == [f"val_{name}" for name in METRICS[setup.spec.task]]


def test_directions():
    assert [default_mode(m) for m in ("val_accuracy", "test_macro_f1", "val_loss", "val_perplexity", "val_mae")] == [
        "max",
        "max",
        "min",
        "min",
        "min",
    ]
