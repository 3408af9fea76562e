"""Naive baselines: hand-worked answers on tiny fixtures, the published naive figures of the
shared datasets (ETTh1/ETTh2 Repeat, persistence and seasonal-naive, majority class, unigram),
and that scoring them leaves a run's model and random state alone."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from rnnl2.baselines import ClassPrior, build_baselines, fit_baselines
from rnnl2.config import ForecastData, load_config
from rnnl2.data import DataSpec, Split, build_splits
from rnnl2.evaluate import evaluate_baselines

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def ramp_csv(path: Path, values: list[float]) -> Path:
    path.write_text("y\n" + "\n".join(f"{v}" for v in values) + "\n")
    return path


def forecast_baselines(path: Path, splits_to_score=("test",), **overrides) -> dict[str, dict[str, float]]:
    raw = {"kind": "timeseries_forecast", "path": str(path), "lookback": 4, "horizon": 2, "rows": [20, 10, 10]}
    cfg = ForecastData.model_validate(raw | overrides)
    splits = build_splits(cfg)
    models = build_baselines(splits.spec, fit_baselines(splits.spec, splits.train), cfg.season)
    return evaluate_baselines(models, {n: splits.get(n) for n in splits_to_score}, "regression", 7)


def test_repeat_last_on_a_ramp_misses_by_the_steps_ahead(tmp_path):
    """y_t = 3t: the forecast h steps ahead is off by 3h, so MSE = 9·(1+4)/2, MAE = 3·1.5 in the
    file's units, and the same divided by the train std (squared for MSE) in scaled units."""
    scores = forecast_baselines(ramp_csv(tmp_path / "r.csv", [3.0 * t for t in range(40)]))["repeat_last"]
    assert scores["test_mse_orig"] == pytest.approx(22.5)
    assert scores["test_mae_orig"] == pytest.approx(4.5)
    std = torch.tensor([3.0 * t for t in range(20)], dtype=torch.float64).std(unbiased=False).item()
    assert scores["test_mse"] == pytest.approx(22.5 / std**2, rel=1e-5)
    assert scores["test_loss"] == scores["test_mse"]


def test_seasonal_naive_is_exact_on_a_periodic_series(tmp_path):
    """Period 4, horizon 6 (longer than a season): seasonal-naive makes no error, repeat-last does."""
    values = [[1.0, 5.0, 2.0, 7.0][t % 4] for t in range(60)]
    scores = forecast_baselines(
        ramp_csv(tmp_path / "p.csv", values), horizon=6, lookback=8, season=4, rows=[30, 15, 15], scaling="none"
    )
    assert scores["seasonal_naive"]["test_mse"] == 0.0
    assert scores["repeat_last"]["test_mse"] > 1.0


def test_season_longer_than_the_lookback_is_refused(tmp_path):
    with pytest.raises(ValueError, match="season"):
        ForecastData.model_validate(
            {
                "kind": "timeseries_forecast",
                "path": str(ramp_csv(tmp_path / "r.csv", [1.0])),
                "lookback": 4,
                "season": 9,
            }
        )


def test_class_prior_majority_and_unigram_cross_entropy():
    """Train labels 0,0,0,1 (three classes): add-one prior (4, 2, 1)/7; majority is class 0."""
    spec = DataSpec(task="classification", input_size=1, output_size=3)
    train = Split(torch.zeros(4, 2, 1), torch.tensor([0, 0, 0, 1]))
    test = Split(torch.zeros(4, 2, 1), torch.tensor([0, 1, 1, 2]))
    fit = fit_baselines(spec, train)
    assert fit == {"counts": [3, 1, 0]}
    scores = evaluate_baselines(build_baselines(spec, fit), {"test": test}, "classification", 3)["majority_class"]
    expected = -(math.log(4 / 7) + 2 * math.log(2 / 7) + math.log(1 / 7)) / 4
    assert scores["test_loss"] == pytest.approx(expected)
    assert scores["test_accuracy"] == 0.25
    assert scores["test_macro_f1"] == pytest.approx(2 * 1 / (2 * 1 + 3 + 0) / 3)  # class 0 only: F1 = 0.4


def test_tagging_prior_skips_padded_steps():
    spec = DataSpec(task="tagging", input_size=1, output_size=2)
    train = Split(torch.zeros(2, 3, 1), torch.tensor([[1, 1, -100], [1, 0, -100]]))
    fit = fit_baselines(spec, train)
    assert fit == {"counts": [1, 3]}
    scores = evaluate_baselines(build_baselines(spec, fit), {"val": train}, "tagging", 1)["unigram"]
    assert scores["val_accuracy"] == 0.75
    assert scores["val_loss"] == pytest.approx(-(3 * math.log(4 / 6) + math.log(2 / 6)) / 4)


def test_targets_that_are_not_inputs_get_the_training_mean():
    """The adding problem: its targets are not an input column, so the baseline predicts the mean."""
    spec = DataSpec(task="regression", input_size=2, output_size=1)
    train = Split(torch.zeros(4, 3, 2), torch.tensor([1.0, 2.0, 3.0, 6.0]).view(4, 1, 1))
    fit = fit_baselines(spec, train)
    assert fit == {"mean": [3.0]}
    scores = evaluate_baselines(build_baselines(spec, fit), {"val": train}, "regression", 2)["train_mean"]
    assert scores["val_mse"] == pytest.approx((4 + 1 + 0 + 9) / 4)


# ----------------------------------------------------------------- published figures

needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data")


def shared_baselines(config: str, overrides=(), smoothing: float | None = None):
    cfg = load_config(CONFIGS / f"{config}.yaml", list(overrides))
    splits = build_splits(cfg.data)
    fit = fit_baselines(splits.spec, splits.train)
    models = build_baselines(splits.spec, fit, getattr(cfg.data, "season", None))
    if smoothing is not None:
        models = {name: ClassPrior(fit["counts"], smoothing) for name in models}
    return evaluate_baselines(models, {"val": splits.val, "test": splits.test}, splits.spec.task, 512)


@needs_shared_data
@pytest.mark.parametrize(("config", "mse", "mae"), [("etth1", 1.295, 0.713), ("etth2", 0.432, 0.422)])
def test_ett_repeat_matches_the_published_figures(monkeypatch, config, mse, mae):
    """DLinear/PatchTST tables, horizon 96, standardized: ETTh1 1.295/0.713 (1.294 recomputed
    exactly, SOURCES.md), ETTh2 0.432/0.422."""
    monkeypatch.setenv("RNNL2_DATA", str(SHARED_DATA))
    scores = shared_baselines(config)["repeat_last"]
    assert scores["test_mse"] == pytest.approx(mse, abs=1.5e-3)
    assert round(scores["test_mae"], 3) == mae


@needs_shared_data
@pytest.mark.parametrize(
    ("config", "season", "rmse", "mae", "seasonal_rmse", "seasonal_mae"),
    [
        ("airline", 12, 52.491, 44.724, 46.082, 41.310),
        ("sunspots", 132, 20.091, 14.837, 45.440, 32.825),
        ("min_temperatures", 365, 2.481, 1.953, 3.728, 2.965),
    ],
)
def test_persistence_and_seasonal_naive_match_shared_sources(
    monkeypatch, config, season, rmse, mae, seasonal_rmse, seasonal_mae
):
    """SOURCES.md "computed here": one step ahead on the last 20% of the rows, in the file's units."""
    monkeypatch.setenv("RNNL2_DATA", str(SHARED_DATA))
    scores = shared_baselines(config, [f"data.lookback={max(season, 24)}", f"data.season={season}"])
    assert round(scores["repeat_last"]["test_rmse_orig"], 3) == rmse
    assert round(scores["repeat_last"]["test_mae_orig"], 3) == mae
    assert round(scores["seasonal_naive"]["test_rmse_orig"], 3) == seasonal_rmse
    assert round(scores["seasonal_naive"]["test_mae_orig"], 3) == seasonal_mae


@needs_shared_data
@pytest.mark.parametrize(("config", "accuracy"), [("trec", 0.188), ("ecg200", 0.64)])
def test_majority_class_matches_shared_sources(monkeypatch, config, accuracy):
    """TREC: ENTY for every test question, 18.8%; ECG200: UCR default rate, error 0.36."""
    monkeypatch.setenv("RNNL2_DATA", str(SHARED_DATA))
    assert shared_baselines(config)["majority_class"]["test_accuracy"] == pytest.approx(accuracy)


@needs_shared_data
def test_unigram_matches_shared_sources(monkeypatch):
    """tinyshakespeare add-one unigram, nanoGPT split: val 3.3473 nats/char. PTB: the MLE unigram
    (smoothing 0) gives the published 639.3 test perplexity; add-one (the default, since a PTB
    validation word never occurs in training) moves it by 0.08%."""
    monkeypatch.setenv("RNNL2_DATA", str(SHARED_DATA))
    assert round(shared_baselines("tinyshakespeare_char")["unigram"]["val_loss"], 4) == 3.3473
    assert round(shared_baselines("ptb_word", smoothing=0.0)["unigram"]["test_perplexity"], 1) == 639.3
    assert shared_baselines("ptb_word")["unigram"]["test_perplexity"] == pytest.approx(639.3, rel=1e-3)
