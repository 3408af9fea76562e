"""`timeseries_forecast`: read and check a CSV table, split its rows chronologically, scale on the
train rows only, and cut windows as `unfold` views of one tensor (memory O(rows), not O(windows·L))."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from ..config import ForecastData
from ..errors import listing, short_repr
from .base import DataError, DataSpec, Split, Splits, check_file, check_header, register, register_loader


@dataclass(frozen=True)
class WindowSplit(Split):
    """A Split whose inputs and targets are strided views of two row tables.

    rows  0 1 2 3 4 5 6 7 8 9        lookback L=4, horizon H=2, stride 1
    w0    i i i i t t                window w: inputs rows [w, w+L), targets rows [w+L, w+L+H)
    w1      i i i i t t
    """

    tables: tuple[torch.Tensor, torch.Tensor] | None = None
    """(rows, features) inputs and (rows, targets) target table the views are cut from."""
    window: tuple[int, int, int] = (1, 1, 1)
    """lookback, horizon, stride."""
    unit: ClassVar[str] = "windows"

    def hold_out(self, fraction: float, generator: torch.Generator) -> tuple[Split, Split]:
        """(earlier windows, the last `fraction` of the windows); the windows whose rows reach into
        the held-out ones are dropped, so no row is both trained on and held out (`generator`
        unused: the cut is chronological). Both parts are plain Splits of views."""
        lookback, horizon, stride = self.window
        count = len(self)
        held = min(max(round(fraction * count), 1), count)
        kept = count - held - -(-(lookback + horizon) // stride) + 1  # window i ends at row i·stride + L + H
        if kept < 1:
            raise DataError(
                f"l2.adapt.holdout_fraction: the training split has {count} windows; holding out {held} leaves "
                "none that does not overlap them"
            )
        rest = Split(self.inputs[:kept], self.targets[:kept], unscale=self.unscale)
        return rest, Split(self.inputs[count - held :], self.targets[count - held :], unscale=self.unscale)

    def to(self, device: torch.device) -> "WindowSplit":
        """Move the row tables (O(rows)) and cut the views again, never the materialized windows."""
        inputs, targets = (table.to(device) for table in self.tables)
        return cut_windows(inputs, targets, *self.window, self.unscale)


def cut_windows(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    lookback: int,
    horizon: int,
    stride: int,
    unscale: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> WindowSplit:
    """Every window of the tables, as views: inputs (windows, L, F), targets (windows, H, T)."""
    count = max((inputs.shape[0] - lookback - horizon) // stride + 1, 0)
    if count == 0:
        empty_in, empty_out = (
            inputs.new_zeros(0, lookback, inputs.shape[1]),
            targets.new_zeros(0, horizon, targets.shape[1]),
        )
        return WindowSplit(
            empty_in, empty_out, unscale=unscale, tables=(inputs, targets), window=(lookback, horizon, stride)
        )
    windows_in = inputs[: inputs.shape[0] - horizon].unfold(0, lookback, stride)[:count]  # (windows, F, L) view
    windows_out = targets[lookback:].unfold(0, horizon, stride)[:count]  # (windows, T, H) view
    return WindowSplit(
        windows_in.transpose(1, 2),
        windows_out.transpose(1, 2),
        unscale=unscale,
        tables=(inputs, targets),
        window=(lookback, horizon, stride),
    )


# ------------------------------------------------------------------ reading and checking


def read_table(path: Path, dtype: dict[str, Any] | None = None) -> pd.DataFrame:
    """The CSV as a frame whose index is the data row (line = index + 2); empty files and a header
    that names a column twice are errors."""
    try:
        frame = pd.read_csv(check_file(path), dtype=dtype)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except (pd.errors.ParserError, ValueError) as err:
        raise DataError(f"{path}: cannot parse as CSV: {str(err).strip().splitlines()[0]}") from None
    check_header(path, read_header(path))
    if len(frame) == 0:
        raise DataError(f"{path}: the file has a header but no data rows")
    return frame


def read_header(path: Path) -> list[str]:
    """The names of the header row as written (pandas renames a repeated `x` to `x.1`)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return next(csv.reader(handle), [])


def require_columns(frame: pd.DataFrame, names: list[str], path: Path) -> None:
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: column {listing([repr(m) for m in missing])} not found; "
            f"the file has {listing([repr(c) for c in frame.columns])}"
        )


def line_of(frame: pd.DataFrame, position: int) -> int:
    return int(frame.index[position]) + 2


def check_times(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """Parse the time column and require strictly increasing timestamps."""
    times = pd.to_datetime(frame[column], errors="coerce")
    bad = np.flatnonzero(times.isna().to_numpy())
    if bad.size:
        raise DataError(
            f"{path}: column {column!r}, line {line_of(frame, bad[0])}: "
            f"cannot parse {short_repr(frame[column].iloc[bad[0]])} as a time"
        )
    steps = np.flatnonzero(np.diff(times.to_numpy().astype("datetime64[ns]").astype(np.int64)) <= 0)
    if steps.size:
        raise DataError(
            f"{path}: column {column!r} is not sorted: line {line_of(frame, steps[0] + 1)} "
            f"({frame[column].iloc[steps[0] + 1]}) does not come after the line before it"
        )
    return times


def check_numeric(frame: pd.DataFrame, columns: list[str], path: Path) -> None:
    """Every column must be numbers and finite; the error names the column, the line and the value."""
    for column in columns:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            numbers = pd.to_numeric(frame[column], errors="coerce")
            bad = np.flatnonzero(numbers.isna().to_numpy() & frame[column].notna().to_numpy())
            raise DataError(
                f"{path}: column {column!r} is not numeric (line {line_of(frame, bad[0])}: "
                f"{short_repr(frame[column].iloc[bad[0]])}); list it in one_hot to encode it as categories"
            )
        infinite = np.flatnonzero(np.isinf(frame[column].to_numpy(dtype=float)))
        if infinite.size:
            raise DataError(f"{path}: column {column!r}, line {line_of(frame, infinite[0])}: infinite value")


def handle_missing(frame: pd.DataFrame, columns: list[str], how: str, path: Path) -> pd.DataFrame:
    """error (name column and line), ffill, interpolate (rows before the first value dropped), or drop."""
    if how in ("ffill", "interpolate"):
        filled = frame[columns].ffill()
        if how == "interpolate":  # numbers linearly between neighbours; categories carried forward
            numeric = [c for c in columns if pd.api.types.is_numeric_dtype(frame[c])]
            filled[numeric] = frame[numeric].interpolate(limit_area="inside")
        frame = frame.assign(**{column: filled[column] for column in columns})
    if how != "error":
        frame = frame[frame[columns].notna().all(axis=1).to_numpy()]
    missing = frame[columns].isna().to_numpy()
    if missing.any():
        row, col = np.argwhere(missing)[0]
        raise DataError(
            f"{path}: column {columns[col]!r}, line {line_of(frame, row)}: missing value "
            f"(set missing: ffill, interpolate or drop to fill or skip it)"
        )
    if len(frame) == 0:
        raise DataError(f"{path}: no rows left after dropping missing values")
    return frame


# ------------------------------------------------------------------ columns and scaling


def resolve_columns(cfg: ForecastData, frame: pd.DataFrame, path: Path) -> tuple[list[str], list[str]]:
    """Feature and target column names, checked against the file."""
    features = cfg.features or [c for c in frame.columns if c != cfg.time_column]
    require_columns(frame, features + (cfg.targets or []) + ([cfg.time_column] if cfg.time_column else []), path)
    for column in cfg.one_hot:
        if column not in features:
            raise DataError(f"data.one_hot: {column!r} is not one of the features ({listing(features)})")
    targets = cfg.targets or [c for c in features if c not in cfg.one_hot]
    categorical = [c for c in targets if c in cfg.one_hot]
    if categorical:
        raise DataError(f"data.targets: {categorical[0]!r} is one-hot encoded; a forecast target must be numeric")
    if cfg.window_norm and any(t not in features for t in targets):
        raise DataError("data.window_norm needs every target among the features")
    if cfg.channel_independent and (targets != features or cfg.one_hot):
        raise DataError("data.channel_independent needs targets equal to the features, none one-hot")
    return features, targets


def feature_names(features: list[str], categories: dict[str, list[str]]) -> list[str]:
    """Input columns after one-hot encoding: `wind` becomes `wind=NE`, `wind=NW`, ..."""
    return [name for c in features for name in ([f"{c}={v}" for v in categories[c]] if c in categories else [c])]


def encode_columns(
    frame: pd.DataFrame, columns: list[str], categories: dict[str, list[str]], scaler: dict[str, Any], path: Path
) -> np.ndarray:
    """(rows, encoded columns) float32, scaled in float64 one column at a time (no full float64 copy)."""
    names = feature_names(columns, categories)
    offset, scale = scaler_arrays(scaler, names)
    table = np.empty((len(frame), len(names)), dtype=np.float32)
    j = 0
    for column in columns:
        if column not in categories:
            table[:, j] = (frame[column].to_numpy(dtype=np.float64) - offset[j]) / scale[j]
            j += 1
            continue
        values = frame[column].astype(str).to_numpy()
        unknown = np.flatnonzero(~np.isin(values, categories[column]))
        if unknown.size:
            raise DataError(
                f"{path}: column {column!r}, line {line_of(frame, unknown[0])}: category "
                f"{short_repr(values[unknown[0]])} was not seen in training ({listing(categories[column])})"
            )
        for category in categories[column]:
            table[:, j] = values == category
            j += 1
    return table


def fit_scaler(kind: str, rows: pd.DataFrame, columns: list[str]) -> dict[str, Any]:
    """Per-column statistics of the train rows: mean/std (population) or min/max, by column name."""
    if kind == "none":
        return {"kind": "none"}
    values = {column: rows[column].to_numpy(dtype=np.float64) for column in columns}
    if kind == "standard":
        return {
            "kind": kind,
            "mean": {c: float(v.mean()) for c, v in values.items()},
            "std": {c: float(v.std()) for c, v in values.items()},
        }
    return {
        "kind": kind,
        "min": {c: float(v.min()) for c, v in values.items()},
        "max": {c: float(v.max()) for c, v in values.items()},
    }


def scaler_arrays(scaler: dict[str, Any], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(offset, scale) per column so that scaled = (x − offset) / scale; one-hot and constant columns
    keep scale 1."""
    offset, scale = np.zeros(len(names)), np.ones(len(names))
    for i, name in enumerate(names):
        if scaler["kind"] == "standard" and name in scaler["mean"]:
            offset[i], scale[i] = scaler["mean"][name], scaler["std"][name]
        elif scaler["kind"] == "minmax" and name in scaler["min"]:
            offset[i], scale[i] = scaler["min"][name], scaler["max"][name] - scaler["min"][name]
    scale[scale == 0] = 1.0
    return offset, scale


# ------------------------------------------------------------------ splitting and building


def split_bounds(cfg: ForecastData, times: pd.Series | None, rows: int, path: Path) -> tuple[int, int, int]:
    """Row indices a ≤ b ≤ c: train [0, a), val [a, b), test [b, c) as target rows."""
    if cfg.rows is not None:
        a, b, c = np.cumsum(cfg.rows).tolist()
        if c > rows:
            raise DataError(f"{path}: data.rows asks for {c} rows, the file has {rows} (after missing values)")
        return a, b, c
    if cfg.dates is not None:
        try:
            edges = [pd.Timestamp(text) for text in cfg.dates]
        except ValueError as err:
            raise DataError(f"data.dates: {err}") from None
        stamps = times.to_numpy().astype("datetime64[ns]")
        a, b, *c = np.searchsorted(stamps, np.array(edges, dtype="datetime64[ns]")).tolist()
        return a, b, c[0] if c else rows
    r0, r1, r2 = cfg.ratios or (0.7, 0.1, 0.2)
    a, b, c = (int(round(rows * x, 6)) for x in (r0, r0 + r1, r0 + r1 + r2))
    return a, b, c


RATIO_RULE = (
    "ratios: each boundary is the floor of its cumulative fraction of the rows, ⌊r0·n⌋, ⌊(r0+r1)·n⌋, "
    "⌊(r0+r1+r2)·n⌋ (the Informer/Autoformer custom-data loader instead takes train ⌊r0·n⌋, test ⌊r2·n⌋ "
    "and val the rest, which can differ by a row)"
)


def split_rule(cfg: ForecastData) -> str:
    """How the rows were split, in words, for summary.json and the start line."""
    if cfg.rows is not None:
        return "rows: counts from the top, later rows unused"
    if cfg.dates is not None:
        return "dates: each split starts at the first row at or after its date"
    return RATIO_RULE


def prepare_rows(cfg: ForecastData, path: Path, pipeline: dict[str, Any] | None = None):
    """Read and check the file; returns (frame, times, features, targets)."""
    frame = read_table(path, dtype={column: str for column in cfg.one_hot} or None)
    if pipeline is not None and list(frame.columns) != pipeline["file_columns"]:
        missing = [c for c in pipeline["file_columns"] if c not in frame.columns]
        extra = [c for c in frame.columns if c not in pipeline["file_columns"]]
        raise DataError(
            f"{path}: columns differ from the training file: missing {short_repr(missing)}, "
            f"unexpected {short_repr(extra)}" + ("" if missing or extra else " (same names, different order)")
        )
    features, targets = resolve_columns(cfg, frame, path)
    used = list(dict.fromkeys(features + targets))
    frame = handle_missing(frame, used + ([cfg.time_column] if cfg.time_column else []), cfg.missing, path)
    check_numeric(frame, [c for c in used if c not in cfg.one_hot], path)
    times = check_times(frame, cfg.time_column, path) if cfg.time_column else None
    if len(frame) < cfg.lookback + cfg.horizon:
        raise DataError(f"{path}: {len(frame)} rows, fewer than lookback + horizon = {cfg.lookback + cfg.horizon}")
    return frame, times, features, targets


def scaled_tables(
    frame: pd.DataFrame, features: list[str], targets: list[str], pipeline: dict[str, Any], path: Path
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled float32 tensors (rows, F) and (rows, T); the targets are a column view when they can be."""
    inputs = torch.from_numpy(encode_columns(frame, features, pipeline["categories"], pipeline["scaler"], path))
    names = pipeline["columns"]
    index = [names.index(t) for t in targets] if all(t in names for t in targets) else None
    if index is not None and index == list(range(index[0], index[0] + len(index))):
        return inputs, inputs[:, index[0] : index[0] + len(index)]  # a view: no second copy of the rows
    return inputs, torch.from_numpy(encode_columns(frame, targets, {}, pipeline["scaler"], path))


def target_unscale(pipeline: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
    if pipeline["scaler"]["kind"] == "none":
        return None
    offset, scale = scaler_arrays(pipeline["scaler"], pipeline["targets"])
    return torch.tensor(offset, dtype=torch.float32), torch.tensor(scale, dtype=torch.float32)


@register("timeseries_forecast")
def build_forecast(cfg: ForecastData) -> Splits:
    """Train/val/test windows of one CSV, scaled with statistics of the train rows."""
    path = Path(cfg.path)
    frame, times, features, targets = prepare_rows(cfg, path)
    a, b, c = split_bounds(cfg, times, len(frame), path)
    L = cfg.lookback
    segments = {"train": (0, a), "val": (max(a - L, 0), b), "test": (max(b - L, 0), c)}
    for name, (lo, hi) in segments.items():
        if hi - lo < L + cfg.horizon:
            raise DataError(
                f"{path}: the {name} split is empty: its rows [{lo}, {hi}) are fewer than "
                f"lookback + horizon = {L + cfg.horizon}"
            )
    train_rows = frame.iloc[:a]
    categories = {col: sorted(train_rows[col].astype(str).unique().tolist()) for col in cfg.one_hot}
    names = feature_names(features, categories)
    numeric = [c for c in dict.fromkeys(features + targets) if c not in cfg.one_hot]
    scaler = fit_scaler(cfg.scaling, train_rows, numeric)
    pipeline = {
        "file_columns": list(frame.columns),
        "columns": names,
        "targets": targets,
        "categories": categories,
        "scaler": scaler,
        "lookback": cfg.lookback,
        "horizon": cfg.horizon,
        "stride": cfg.stride,
    }
    if cfg.window_norm:
        pipeline["window_norm"] = [names.index(t) for t in targets]
    if cfg.channel_independent:
        pipeline["channel_independent"] = True
        pipeline["segment"] = cfg.segment
    inputs, target_table = scaled_tables(frame, features, targets, pipeline, path)
    unscale = target_unscale(pipeline)
    splits = {
        name: cut_windows(inputs[lo:hi], target_table[lo:hi], L, cfg.horizon, cfg.stride, unscale)
        for name, (lo, hi) in segments.items()
    }
    spec = DataSpec(
        task="regression",
        input_size=len(names),
        output_size=len(targets),
        horizon=cfg.horizon,
        pipeline=pipeline,
        target_columns=[names.index(t) for t in targets] if all(t in names for t in targets) else None,
    )
    rows = {"train": a, "val": b - a, "test": c - b, "unused": len(frame) - c, "rule": split_rule(cfg)}
    return Splits(splits["train"], splits["val"], splits["test"], spec, rows)


@register_loader("timeseries_forecast")
def load_forecast_file(cfg: ForecastData, spec: DataSpec, path: Path) -> Split:
    """Every window of a new file, prepared with the training file's columns, categories and scaler."""
    frame, _, features, targets = prepare_rows(cfg, path, spec.pipeline)
    inputs, target_table = scaled_tables(frame, features, targets, spec.pipeline, path)
    return cut_windows(inputs, target_table, cfg.lookback, cfg.horizon, cfg.stride, target_unscale(spec.pipeline))
