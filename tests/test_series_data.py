"""timeseries_forecast: parsing, the ETT split protocol, train-only scaling, windows as views,
per-window normalization, original-unit metrics, and every bad-input case through the CLI."""

from __future__ import annotations

import re

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from helpers import write_config
from rnnl2.cli import app
from rnnl2.config import ForecastData, ModelConfig
from rnnl2.data import DataError, build_splits
from rnnl2.evaluate import evaluate
from rnnl2.models import build_model


def write_csv(path: Path, header: str, rows: list[str], crlf: bool = True, final_newline: bool = False) -> Path:
    """A CSV as the jbrownlee files are: CRLF line ends and no final newline (by default)."""
    end = "\r\n" if crlf else "\n"
    path.write_bytes((end.join([header, *rows]) + (end if final_newline else "")).encode())
    return path


def counting_csv(path: Path, rows: int = 200) -> Path:
    """time, x = row index, y = 10·row index: every window's values name its rows."""
    lines = [f"2020-01-01 {i // 60:02d}:{i % 60:02d}:00,{i},{10 * i}" for i in range(rows)]
    return write_csv(path, "time,x,y", lines)


def forecast(path: Path, **overrides) -> ForecastData:
    raw = {
        "kind": "timeseries_forecast",
        "path": str(path),
        "time_column": "time",
        "lookback": 8,
        "horizon": 4,
        "scaling": "none",
        "rows": [100, 50, 50],
    }
    return ForecastData.model_validate(raw | overrides)


def test_ett_protocol_split_indices(tmp_path):
    """train rows [0, a), val [a−L, b), test [b−L, c): val/test inputs start L rows early."""
    splits = build_splits(forecast(counting_csv(tmp_path / "s.csv"), rows=[100, 50, 40]))
    L, H = 8, 4
    for split, lo, hi in ((splits.train, 0, 100), (splits.val, 100 - L, 150), (splits.test, 150 - L, 190)):
        assert len(split) == hi - lo - L - H + 1
        assert split.inputs[0, :, 0].tolist() == list(range(lo, lo + L))
        assert split.targets[0, :, 0].tolist() == list(range(lo + L, lo + L + H))
        assert split.targets[-1, -1, 0].item() == hi - 1  # the last target row is the split's last row
    assert splits.val.targets[0, 0, 0].item() == 100 and splits.test.targets[0, 0, 0].item() == 150


def test_crlf_without_final_newline_and_lf_read_the_same(tmp_path):
    lines = [f"{i},{i * 0.5}" for i in range(40)]
    a = build_splits(forecast(write_csv(tmp_path / "a.csv", "x,y", lines), time_column=None, rows=None))
    b = build_splits(
        forecast(
            write_csv(tmp_path / "b.csv", "x,y", lines, crlf=False, final_newline=True), time_column=None, rows=None
        )
    )
    assert torch.equal(a.test.inputs, b.test.inputs) and a.test.inputs[-1, -1, 1].item() == 39 * 0.5 - 4 * 0.5


def test_standard_scaler_is_fitted_on_train_rows_only(tmp_path):
    splits = build_splits(forecast(counting_csv(tmp_path / "s.csv"), scaling="standard"))
    train = np.arange(100, dtype=np.float64)
    scaler = splits.spec.pipeline["scaler"]
    assert scaler["mean"]["x"] == pytest.approx(train.mean()) and scaler["std"]["x"] == pytest.approx(train.std())
    assert splits.test.targets[0, 0, 0].item() == pytest.approx((150 - train.mean()) / train.std(), rel=1e-6)


def test_minmax_scaler(tmp_path):
    splits = build_splits(forecast(counting_csv(tmp_path / "s.csv"), scaling="minmax", targets=["y"]))
    assert splits.train.inputs.min().item() == 0.0 and splits.train.targets.max().item() == pytest.approx(1.0)
    assert splits.val.targets[0, 0, 0].item() == pytest.approx(100 / 99)


def test_windows_are_views_of_one_table(tmp_path):
    splits = build_splits(forecast(counting_csv(tmp_path / "s.csv")))
    storage = splits.train.inputs.untyped_storage()
    assert storage.nbytes() == 200 * 2 * 4  # the whole table, once: not windows × lookback
    assert splits.test.inputs.untyped_storage().data_ptr() == storage.data_ptr()
    assert splits.test.targets.untyped_storage().data_ptr() == storage.data_ptr()  # targets = a column view
    moved = splits.train.to(torch.device("cpu"))
    assert moved.inputs.untyped_storage().nbytes() == storage.nbytes()


@settings(deadline=None, max_examples=25)
@given(lookback=st.integers(1, 10), horizon=st.integers(1, 5), stride=st.integers(1, 4))
def test_each_window_target_is_the_next_rows(tmp_path_factory, lookback, horizon, stride):
    path = counting_csv(tmp_path_factory.mktemp("w") / "s.csv", rows=60)
    cfg = forecast(path, lookback=lookback, horizon=horizon, stride=stride, rows=None, ratios=(1.0, 0.0, 0.0))
    from rnnl2.data.series import load_forecast_file  # every window of the file, no split

    spec = build_splits(forecast(path, lookback=lookback, horizon=horizon, rows=[30, 15, 15])).spec
    split = load_forecast_file(cfg, spec, path)
    assert len(split) == (60 - lookback - horizon) // stride + 1
    starts = split.inputs[:, 0, 0]
    assert torch.equal(starts, torch.arange(len(split), dtype=torch.float32) * stride)
    expected = starts[:, None] + lookback + torch.arange(horizon)
    assert torch.equal(split.targets[:, :, 0], expected)


def test_missing_values(tmp_path):
    lines = [f"{i},{'' if i in (5, 6) else i}" for i in range(40)]
    path = write_csv(tmp_path / "m.csv", "a,b", lines)
    base = {"time_column": None, "rows": None, "lookback": 3, "horizon": 1, "ratios": (1.0, 0.0, 0.0)}
    with pytest.raises(DataError, match=r"column 'b', line 7: missing value"):
        build_splits(forecast(path, **base))
    from rnnl2.data.series import load_forecast_file

    spec = build_splits(forecast(path, **base | {"missing": "ffill", "ratios": None})).spec
    for how, expected in (("ffill", [4, 4, 4]), ("interpolate", [4, 5, 6])):
        split = load_forecast_file(forecast(path, **base, missing=how), spec, path)
        assert split.inputs[4, :, 1].tolist() == expected
    dropped = load_forecast_file(forecast(path, **base, missing="drop"), spec, path)
    assert len(dropped) == 38 - 3 and dropped.inputs[4, :, 0].tolist() == [4, 7, 8]


def test_one_hot_column(tmp_path):
    lines = [f"{i},{'NW' if i % 3 else 'cv'}" for i in range(40)]
    path = write_csv(tmp_path / "c.csv", "v,wind", lines)
    splits = build_splits(forecast(path, time_column=None, rows=None, one_hot=["wind"], lookback=3, horizon=1))
    assert splits.spec.pipeline["columns"] == ["v", "wind=NW", "wind=cv"]
    assert splits.spec.output_size == 1 and splits.train.inputs[0, :, 1:].tolist() == [[0, 1], [1, 0], [1, 0]]


def test_split_by_dates(tmp_path):
    lines = [f"2021-01-{d:02d},{d}" for d in range(1, 32)]
    path = write_csv(tmp_path / "d.csv", "day,v", lines)
    cfg = forecast(path, time_column="day", rows=None, dates=["2021-01-16", "2021-01-24"], lookback=3, horizon=1)
    splits = build_splits(cfg)
    assert splits.val.targets[0, 0, 0].item() == 16 and splits.test.targets[0, 0, 0].item() == 24


def test_window_norm_makes_forecasts_shift_with_the_level(tmp_path):
    """Subtract the last row, add it back: a constant shift of the inputs shifts the forecast exactly."""
    splits = build_splits(forecast(counting_csv(tmp_path / "s.csv"), window_norm=True, scaling="standard"))
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="gru", hidden_size=4), splits.spec).eval()
    inputs = splits.test.inputs[:5]
    with torch.no_grad():
        base, shifted = model(inputs)[0], model(inputs + 3.0)[0]
    assert torch.allclose(shifted, base + 3.0, atol=1e-5)


def test_metrics_in_original_units(tmp_path):
    splits = build_splits(forecast(counting_csv(tmp_path / "s.csv"), scaling="standard", targets=["y"]))
    model = build_model(ModelConfig(cell="rnn", hidden_size=4), splits.spec)
    metrics = evaluate(model, splits.test, "regression", batch_size=16)
    std = splits.spec.pipeline["scaler"]["std"]["y"]
    assert metrics["mse_orig"] == pytest.approx(metrics["mse"] * std**2, rel=1e-4)
    assert metrics["mae_orig"] == pytest.approx(metrics["mae"] * std, rel=1e-4)


# ------------------------------------------------------------------ bad input, through the CLI

TINY = {
    "name": "fc",
    "device": "cpu",
    "model": {"cell": "gru", "hidden_size": 4},
    "train": {"epochs": 1, "batch_size": 16},
}


def run_train(tmp_path: Path, data: dict):
    config = write_config(
        tmp_path, TINY | {"data": {"kind": "timeseries_forecast", "lookback": 4, "horizon": 2} | data}
    )
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["train", str(config), "--runs-dir", str(runs), "-q"])
    return result, runs


@pytest.mark.parametrize(
    "content, data, message",
    [
        ("", {}, "the file is empty"),
        ("a,b", {}, "no data rows"),
        ("a,b\n" + "\n".join(f"{i},{i}" for i in range(30)), {"features": ["a", "c"]}, "column 'c' not found"),
        ("a,b\n" + "\n".join(f"{i},x{i}" for i in range(30)), {}, "column 'b' is not numeric (line 2: 'x0')"),
        (
            "a,b\n" + "\n".join(f"{i},{'' if i == 9 else i}" for i in range(30)),
            {"targets": ["b"]},
            "column 'b', line 11: missing value",
        ),
        (
            "a,b\n" + "\n".join(f"{i},{'inf' if i == 3 else i}" for i in range(30)),
            {},
            "column 'b', line 5: infinite value",
        ),
        ("a,b\n1,2\n3,4\n5,6", {}, "3 rows, fewer than lookback + horizon = 6"),
        ("a,b\n" + "\n".join(f"{i},{i}" for i in range(30)), {"ratios": [0.9, 0.1, 0.0]}, "the test split is empty"),
        (
            "t,a\n2020-01-02,1\n2020-01-01,2\n" + "\n".join(f"2020-02-{i:02d},{i}" for i in range(1, 20)),
            {"time_column": "t"},
            "column 't' is not sorted: line 3",
        ),
        (
            "a,b,b\n" + "\n".join(f"{i},{i},{i}" for i in range(30)),
            {"features": ["b"]},
            "the header names column 'b' twice (columns 2 and 3)",
        ),  # pandas would rename one `b.1`
        ("a,b\n" + "\n".join(f"{i},{'x' * 5000 if i == 4 else i}" for i in range(30)), {}, "column 'b' is not numeric"),
    ],
)
def test_bad_data_exits_2_without_a_run_folder(tmp_path, content, data, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    result, runs = run_train(tmp_path, {"path": str(path)} | data)
    assert result.exit_code == 2, result.output
    assert message in result.output and "bad.csv" in result.output
    assert "Traceback" not in result.output and len(result.output) < 400
    assert not runs.exists() or not any(runs.rglob("config.yaml"))


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "timeseries_forecast", "path": "{folder}", "lookback": 4},
        {"kind": "sequence_classification", "train_path": "{folder}", "test_path": "{folder}"},
        {"kind": "text_classification", "path": "{folder}"},
        {"kind": "text_lm", "train_path": "{folder}", "val_path": "{folder}", "test_path": "{folder}"},
    ],
)
def test_a_data_path_that_is_a_folder_exits_2_naming_it(tmp_path, data):
    folder = tmp_path / "data.csv"
    folder.mkdir()
    data = {
        key: value.replace("{folder}", str(folder)) if isinstance(value, str) else value for key, value in data.items()
    }
    config = write_config(tmp_path, TINY | {"data": data})
    result = CliRunner().invoke(app, ["train", str(config), "--runs-dir", str(tmp_path / "runs"), "-q"])
    assert result.exit_code == 2, result.output
    assert f"{folder}: is a folder, not a file" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.yaml"))


def test_channel_independent_forecasts_each_column_from_itself(tmp_path):
    splits = build_splits(
        forecast(counting_csv(tmp_path / "s.csv"), channel_independent=True, window_norm=True, scaling="standard")
    )
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="gru", hidden_size=4), splits.spec).eval()
    assert model.rnn.input_size == 1
    inputs = splits.test.inputs[:3].clone()
    with torch.no_grad():
        before = model(inputs)[0]  # (batch, horizon, 2)
        inputs[:, :, 0] += torch.randn(3, 8)
        after = model(inputs)[0]
    assert before.shape == (3, 4, 2)
    assert torch.equal(before[..., 1], after[..., 1]) and not torch.equal(before[..., 0], after[..., 0])


def test_segments_feed_each_channel_as_consecutive_chunks(tmp_path):
    splits = build_splits(
        forecast(counting_csv(tmp_path / "s.csv"), channel_independent=True, segment=4, window_norm=True)
    )
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="gru", hidden_size=4), splits.spec).eval()
    assert model.rnn.input_size == 4
    inputs = splits.test.inputs[:3]  # (batch, lookback 8, channels 2)
    with torch.no_grad():
        outputs = model(inputs)[0]  # (batch, horizon 4, channels 2)
        for channel in range(2):  # by hand: the channel minus its last value, 2 steps of 4 values
            series = inputs[:, :, channel]
            steps = (series - series[:, -1:]).view(3, 2, 4)
            _, hidden = model.rnn(steps)
            expected = model.head(hidden[-1]) + series[:, -1:]
            torch.testing.assert_close(outputs[:, :, channel], expected)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"segment": 4}, "segment needs channel_independent"),
        ({"segment": 3, "channel_independent": True}, "lookback (8) must be a multiple of segment (3)"),
    ],
)
def test_bad_segment_is_a_config_error(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        forecast(tmp_path / "s.csv", **overrides)


def test_counts_name_the_rows_and_windows_of_each_split(tmp_path):
    """144 rows at the default ratios: boundaries ⌊0.7·144⌋ = 100 and ⌊0.8·144⌋ = 115, so 100/15/29
    rows (Autoformer's loader would take 100/16/28); windows of lookback 8, horizon 4."""
    cfg = forecast(counting_csv(tmp_path / "s.csv", rows=144), rows=None)
    counts = build_splits(cfg).counts()
    assert {k: counts["rows"][k] for k in ("train", "val", "test", "unused")} == {
        "train": 100,
        "val": 15,
        "test": 29,
        "unused": 0,
    }
    assert "floor" in counts["rows"]["rule"]
    assert (counts["unit"], counts["train"], counts["val"], counts["test"]) == ("windows", 100 - 11, 15 - 3, 29 - 3)


@pytest.mark.parametrize("relative", [True, False])
def test_a_data_variable_resolves_as_the_shell_typed_it(tmp_path, monkeypatch, relative):
    """`RNNL2_DATA=data rnnl2 train configs/x.yaml`, the README's form: a relative value is read
    from the working directory, not from the config's folder; an absolute value as it is."""
    (tmp_path / "data").mkdir()
    counting_csv(tmp_path / "data" / "series.csv", rows=80)
    (tmp_path / "configs").mkdir()
    data = {"kind": "timeseries_forecast", "path": "${RNNL2_TEST_DATA}/series.csv", "time_column": "time"}
    data |= {"lookback": 4, "horizon": 2, "rows": [40, 20, 20]}
    config = write_config(tmp_path / "configs", TINY | {"data": data})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RNNL2_TEST_DATA", "data" if relative else str(tmp_path / "data"))
    result = CliRunner().invoke(app, ["train", str(config.relative_to(tmp_path)), "--runs-dir", "runs", "-q"])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs" / "fc").iterdir()
    assert (run / "summary.json").is_file()
