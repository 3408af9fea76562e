"""`eval --data` and `predict` on new files through a checkpoint's saved pipeline, for forecasting
and sequence classification; mismatched columns, unseen labels and generated kinds are errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from helpers import write_config
from rnnl2.cli import app
from rnnl2.data import load_new_data
from rnnl2.evaluate import load_trained
from test_series_data import write_csv
from test_ucr_data import two_class_rows, write_ucr

runner = CliRunner()


def train(tmp_path: Path, data: dict) -> Path:
    raw = {
        "name": "p",
        "device": "cpu",
        "model": {"cell": "gru", "hidden_size": 4},
        "train": {"epochs": 1, "batch_size": 16},
        "data": data,
    }
    result = runner.invoke(app, ["train", str(write_config(tmp_path, raw)), "--runs-dir", str(tmp_path / "runs"), "-q"])
    assert result.exit_code == 0, result.output
    return Path(result.output.strip().splitlines()[-1])


@pytest.fixture
def forecast_run(tmp_path):
    lines = [f"2020-01-{1 + i // 24:02d} {i % 24:02d}:00,{i % 7},{100 + 10 * (i % 5)}" for i in range(120)]
    path = write_csv(tmp_path / "series.csv", "time,a,b", lines)
    data = {
        "kind": "timeseries_forecast",
        "path": str(path),
        "time_column": "time",
        "lookback": 6,
        "horizon": 3,
        "targets": ["b"],
    }
    return train(tmp_path, data), path


def test_eval_data_gives_scaled_and_original_metrics(forecast_run):
    run_dir, path = forecast_run
    result = runner.invoke(app, ["eval", str(run_dir), "--data", str(path), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["split"] == "data" and record["data"] == str(path)
    assert record["data_mse_orig"] > record["data_mse"] > 0
    assert not (run_dir / "eval-data.json").exists()


def test_predict_writes_forecasts_in_original_units(forecast_run, tmp_path):
    run_dir, path = forecast_run
    out = tmp_path / "pred.csv"
    result = runner.invoke(app, ["predict", str(run_dir), "--data", str(path), "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    windows = 120 - 6 - 3 + 1
    assert list(table.columns) == ["window", "step", "b"] and len(table) == windows * 3
    assert table["step"].tolist()[:4] == [1, 2, 3, 1]
    _, _, cfg, spec, model = load_trained(run_dir, torch.device("cpu"))
    split = load_new_data(cfg.data, spec, path)
    with torch.no_grad():
        scaled = model.eval()(split.inputs[:1])[0][0, :, 0]
    scaler = spec.pipeline["scaler"]
    expected = scaled.double() * scaler["std"]["b"] + scaler["mean"]["b"]
    assert torch.allclose(torch.tensor(table["b"].to_numpy()[:3]), expected, rtol=1e-5)


def test_predict_to_stdout(forecast_run):
    run_dir, path = forecast_run
    result = runner.invoke(app, ["predict", str(run_dir), "--data", str(path), "--device", "cpu"])
    assert result.exit_code == 0 and result.output.startswith("window,step,b\n0,1,")


def test_data_with_other_columns_is_an_error(forecast_run, tmp_path):
    run_dir, _ = forecast_run
    other = write_csv(tmp_path / "other.csv", "time,a,c", [f"2020-01-01 {i:02d}:00,{i},{i}" for i in range(20)])
    for command in ("eval", "predict"):
        result = runner.invoke(app, [command, str(run_dir), "--data", str(other), "--device", "cpu"])
        assert result.exit_code == 2
        assert "other.csv: columns differ from the training file: missing ['b'], unexpected ['c']" in result.output


def test_classification_predict_and_unseen_label(tmp_path):
    train_file = write_ucr(tmp_path / "T_TRAIN.tsv", two_class_rows(12, labels=("gun", "point")))
    test_file = write_ucr(tmp_path / "T_TEST.tsv", two_class_rows(5, labels=("gun", "point"), seed=1))
    run_dir = train(
        tmp_path,
        {
            "kind": "sequence_classification",
            "train_path": str(train_file),
            "test_path": str(test_file),
            "val_ratio": 0.5,
        },
    )
    out = tmp_path / "classes.csv"
    result = runner.invoke(app, ["predict", str(run_dir), "--data", str(test_file), "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert list(table.columns) == ["index", "label", "prob_gun", "prob_point"] and len(table) == 5
    assert set(table["label"]) <= {"gun", "point"}
    assert (table[["prob_gun", "prob_point"]].sum(axis=1) - 1).abs().max() < 1e-5
    result = runner.invoke(app, ["eval", str(run_dir), "--data", str(test_file), "--json", "--device", "cpu"])
    assert result.exit_code == 0 and 0 <= json.loads(result.output)["data_accuracy"] <= 1
    unseen = write_ucr(tmp_path / "U_TEST.tsv", [("gun", [0.0] * 6), ("knife", [1.0] * 6)])
    result = runner.invoke(app, ["predict", str(run_dir), "--data", str(unseen), "--device", "cpu"])
    assert result.exit_code == 2 and "U_TEST.tsv: line 2: label 'knife' was not seen in training" in result.output


def test_generated_kinds_have_no_data_files(tmp_path, tiny_config):
    result = runner.invoke(app, ["train", str(tiny_config), "--runs-dir", str(tmp_path / "runs"), "-q"])
    run_dir = result.output.strip().splitlines()[-1]
    result = runner.invoke(app, ["eval", run_dir, "--data", str(tiny_config), "--device", "cpu"])
    assert result.exit_code == 2 and "generated, not read from files" in result.output
