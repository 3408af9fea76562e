"""`sequence_classification`: UCR-format files (label in column 0, the series after it) as
(series, time, 1) tensors, labels of any type mapped to class ids, a val file or a seeded stratified
val carve-out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import SequenceClassificationData
from ..errors import short_repr
from .base import DataError, DataSpec, Split, Splits, check_file, register, register_loader
from .labels import fit_label_map, label_ids, stratified_split


def canonical_labels(raw: list[str]) -> list[str]:
    """Labels as text; numeric labels in one canonical spelling, so `1`, `1.0` and `1e0` agree."""
    try:
        numbers = [float(label) for label in raw]
    except ValueError:
        return raw
    return [str(int(x)) if x.is_integer() else repr(x) for x in numbers]


def read_ucr(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(labels, values (series, time) with NaN padding, lengths) of one UCR file."""
    try:
        with check_file(path).open(encoding="utf-8") as handle:
            first = handle.readline()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    if not first.strip():
        raise DataError(f"{path}: the file is empty")
    sep = "\t" if "\t" in first else ","
    try:
        frame = pd.read_csv(path, sep=sep, header=None, dtype={0: str}, skip_blank_lines=True)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise DataError(
            f"{path}: cannot parse as UCR {'TSV' if sep == chr(9) else 'CSV'}: {str(err).strip().splitlines()[0]}"
        ) from None
    labels = frame[0].str.strip()
    empty = np.flatnonzero((labels.isna() | (labels == "")).to_numpy())
    if empty.size:
        raise DataError(f"{path}: line {empty[0] + 1}: the label is empty")
    other = "," if sep == "\t" else "\t"
    mixed = np.flatnonzero(frame[0].str.contains(other, regex=False).to_numpy())
    if mixed.size:  # `1,0.5,0.2` in a tab-separated file would be one label, a class of its own
        name = {"\t": "tab", ",": "comma"}
        raise DataError(
            f"{path}: line {mixed[0] + 1}: {short_repr(frame.iat[mixed[0], 0])} holds a {name[other]}, "
            f"but the file is {name[sep]}-separated (so is its first line); use one separator throughout"
        )
    if frame.shape[1] < 2:
        raise DataError(f"{path}: each line needs a label and at least one value")
    values = frame.iloc[:, 1:].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.argwhere(np.isnan(values) & frame.iloc[:, 1:].notna().to_numpy() | np.isinf(values))
    if bad.size:
        row, col = bad[0]
        raise DataError(
            f"{path}: line {row + 1}, column {col + 2}: {short_repr(frame.iat[row, col + 1])} is not a finite number"
        )
    present = ~np.isnan(values)
    lengths = present.sum(axis=1)
    holes = np.flatnonzero((present != (np.arange(values.shape[1]) < lengths[:, None])).any(axis=1))
    if holes.size:  # a gap before the last value
        raise DataError(
            f"{path}: line {holes[0] + 1}: missing value inside the series (only trailing ones may be empty)"
        )
    if (lengths == 0).any():
        raise DataError(f"{path}: line {int(np.argmin(lengths)) + 1}: a label with no values")
    return canonical_labels(labels.tolist()), values, lengths


def to_split(values: np.ndarray, lengths: np.ndarray, class_ids: np.ndarray, znorm: bool, segment: int = 1) -> Split:
    """Inputs (series, time/segment, segment), zero after each series' end; lengths only when they differ."""
    if znorm:
        mean = np.nanmean(values, axis=1, keepdims=True)
        std = np.nanstd(values, axis=1, keepdims=True)
        values = (values - mean) / np.where(std == 0, 1.0, std)
    steps = -(-values.shape[1] // segment)
    padded = np.zeros((len(values), steps * segment), dtype=np.float32)
    padded[:, : values.shape[1]] = np.nan_to_num(values, nan=0.0)
    inputs = torch.from_numpy(padded).view(len(values), steps, segment)
    lengths = -(-lengths // segment)
    varied = lengths.min() != lengths.max()
    return Split(inputs, torch.from_numpy(class_ids), torch.from_numpy(lengths) if varied else None)


@register("sequence_classification")
def build_sequence_classification(cfg: SequenceClassificationData) -> Splits:
    """Train from the TRAIN file; val from `val_path` or carved from TRAIN (stratified, seeded); test from TEST."""
    train_path = Path(cfg.train_path)
    labels, values, lengths = read_ucr(train_path)
    classes = fit_label_map(labels)
    if len(classes) < 2:
        raise DataError(f"{train_path}: only one class ({short_repr(classes[0])}); classification needs at least two")
    class_ids = label_ids(train_path, labels, range(1, len(labels) + 1), classes)
    spec = DataSpec(
        task="classification", input_size=cfg.segment, output_size=len(classes), pipeline={"labels": classes}
    )
    if cfg.val_path is not None:
        train_rows = np.arange(len(labels))
        val = load_ucr_file(cfg, spec, Path(cfg.val_path))
    else:
        assert cfg.val_ratio is not None  # the schema sets it whenever val_path is absent
        train_rows, val_rows = stratified_split(
            class_ids, cfg.val_ratio, cfg.seed, train_path, "validation", "val_ratio"
        )
        val = to_split(values[val_rows], lengths[val_rows], class_ids[val_rows], cfg.znorm, cfg.segment)
    return Splits(
        train=to_split(values[train_rows], lengths[train_rows], class_ids[train_rows], cfg.znorm, cfg.segment),
        val=val,
        test=load_ucr_file(cfg, spec, Path(cfg.test_path)),
        spec=spec,
    )


@register_loader("sequence_classification")
def load_ucr_file(cfg: SequenceClassificationData, spec: DataSpec, path: Path) -> Split:
    """A UCR file besides TRAIN (val, test, `eval --data`) through the training label map and normalization."""
    labels, values, lengths = read_ucr(path)
    class_ids = label_ids(path, labels, range(1, len(labels) + 1), spec.pipeline["labels"])
    return to_split(values, lengths, class_ids, cfg.znorm, cfg.segment)
