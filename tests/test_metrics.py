"""metrics: one torch-free list of metric names per task, their directions, and the task of each
data kind, agreeing with what evaluate logs and what the data builders build."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from rnnl2 import compare, evaluate

from rnnl2.search import sweep
from rnnl2.config import DATA_KINDS, validate_config
from rnnl2.data import build_splits
from rnnl2.metrics import HIGHER_IS_BETTER, METRICS, TASK_OF_KIND, default_mode, validation_metrics

SMALL = {"num_train": 4, "num_val": 2, "num_test": 2}


@pytest.mark.parametrize(
    "metric, mode",
    [
        ("val_loss", "min"),
        ("val_accuracy", "max"),
        ("test_macro_f1", "max"),
        ("val_rmse", "min"),
        ("val_perplexity", "min"),
        ("train_data_loss", "min"),
    ],
)
def test_default_mode_is_the_metrics_direction(metric, mode):
    assert default_mode(metric) == mode


def test_every_data_kind_has_a_task_with_metrics():
    assert set(TASK_OF_KIND) == {m.model_fields["kind"].default for m in DATA_KINDS}
    assert set(TASK_OF_KIND.values()) == set(METRICS)
    assert validation_metrics("seed_tagging") == ["val_loss", "val_accuracy"]
    assert HIGHER_IS_BETTER <= {name for names in METRICS.values() for name in names}


@pytest.mark.parametrize("kind, data", [("seed_tagging", SMALL), ("sine", SMALL), ("adding", SMALL), ("text_lm", {})])
def test_the_task_of_a_kind_is_the_one_its_builder_makes(kind, data, tmp_path):
    if kind == "text_lm":
        (tmp_path / "text.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 20)
        data = {"path": str(tmp_path / "text.txt")}
    cfg = validate_config({"name": "t", "data": {"kind": kind, **data}})
    assert build_splits(cfg.data).spec.task == TASK_OF_KIND[kind]


@pytest.mark.parametrize("task", sorted(METRICS))
def test_evaluate_logs_exactly_the_metrics_named_for_its_task(task):
    sums = {"count": 4.0, "nll": 2.0, "correct": 3.0, "squared": 1.0, "absolute": 1.0}
    if task == "classification":
        sums["confusion"] = torch.tensor([[2, 0], [1, 1]])
    assert tuple(evaluate.finish_metrics(task, sums)) == METRICS[task]


def test_one_source_for_every_room():
    assert not hasattr(evaluate, "METRICS") and not hasattr(evaluate, "HIGHER_IS_BETTER")  # no copies left
    assert compare.default_mode is default_mode and sweep.default_mode is default_mode


def test_metrics_and_config_never_import_torch():
    code = "import sys, rnnl2.metrics, rnnl2.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("best_metric", "model", "base", "change", "beats"),
    [("val_loss", 0.0846, 0.0811, -0.0846 / 0.0811 + 1, False), ("val_accuracy", 0.9, 0.6, 0.5, True)],
)
def test_versus_baseline_compares_the_test_twin_of_the_early_stopping_metric(best_metric, model, base, change, beats):
    from rnnl2.metrics import reference_baseline, versus_baseline

    metric = "test_" + best_metric[4:]
    baselines = {"a": {"val_loss": 2.0, metric: base}, "b": {"val_loss": 3.0, metric: 0.0}}
    assert reference_baseline(baselines, "val") == "a"  # chosen on val, never on test
    summary = {"best_metric": best_metric, metric: model, "baseline": "a", "baselines": baselines}
    vs = versus_baseline(summary)
    assert (vs["metric"], vs["baseline_value"], vs["beats"]) == (metric, base, beats)
    assert vs["change"] == pytest.approx(change)
    assert versus_baseline({**summary, "baselines": {}}) is None
