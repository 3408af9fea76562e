"""`sequence_classification`: UCR-format files (label in column 0, the series after it) as
(series, time, 1) tensors, labels of any type mapped to class ids, a seeded stratified val carve-out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import SequenceClassificationData
from . import DataError, DataSpec, Split, Splits, register, register_loader


def canonical_labels(raw: list[str]) -> list[str]:
    """Labels as text; numeric labels in one canonical spelling, so `1`, `1.0` and `1e0` agree."""
    try:
        numbers = [float(label) for label in raw]
    except ValueError:
        return raw
    return [str(int(x)) if x.is_integer() else repr(x) for x in numbers]


def sort_labels(labels: set[str]) -> list[str]:
    """Class ids follow numeric order when every label is a number, else text order."""
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


def read_ucr(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(labels, values (series, time) with NaN padding, lengths) of one UCR file."""
    try:
        first = path.open(encoding="utf-8").readline()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    if not first.strip():
        raise DataError(f"{path}: the file is empty")
    sep = "\t" if "\t" in first else ","
    try:
        frame = pd.read_csv(path, sep=sep, header=None, dtype={0: str}, skip_blank_lines=True)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{path}: cannot parse as UCR {'TSV' if sep == chr(9) else 'CSV'}: "
                        f"{str(err).strip().splitlines()[0]}") from None
    if frame.shape[1] < 2:
        raise DataError(f"{path}: each line needs a label and at least one value")
    values = frame.iloc[:, 1:].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.argwhere(np.isnan(values) & frame.iloc[:, 1:].notna().to_numpy() | np.isinf(values))
    if bad.size:
        row, col = bad[0]
        raise DataError(f"{path}: line {row + 1}, column {col + 2}: {frame.iat[row, col + 1]!r} is not a finite number")
    present = ~np.isnan(values)
    lengths = present.sum(axis=1)
    holes = np.flatnonzero((present != (np.arange(values.shape[1]) < lengths[:, None])).any(axis=1))
    if holes.size:  # a gap before the last value
        raise DataError(f"{path}: line {holes[0] + 1}: missing value inside the series (only trailing ones may be empty)")
    if (lengths == 0).any():
        raise DataError(f"{path}: line {int(np.argmin(lengths)) + 1}: a label with no values")
    if frame[0].isna().any():
        raise DataError(f"{path}: line {int(np.flatnonzero(frame[0].isna())[0]) + 1}: the label is empty")
    return canonical_labels([label.strip() for label in frame[0]]), values, lengths


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


def class_ids_of(labels: list[str], classes: list[str], path: Path) -> np.ndarray:
    """Class id of every label; a label training never saw is an error naming it and its line."""
    index = {label: i for i, label in enumerate(classes)}
    for line, label in enumerate(labels, start=1):
        if label not in index:
            raise DataError(f"{path}: line {line}: label {label!r} was not seen in training (classes {classes})")
    return np.array([index[label] for label in labels], dtype=np.int64)


def carve_validation(class_ids: np.ndarray, ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, val): `ratio` of each class, chosen by a seeded permutation."""
    generator = np.random.default_rng(seed)
    val = []
    for label in np.unique(class_ids):
        rows = generator.permutation(np.flatnonzero(class_ids == label))
        val.extend(rows[: int(round(ratio * len(rows)))].tolist())
    val_rows = np.sort(np.array(val, dtype=np.int64))
    return np.setdiff1d(np.arange(len(class_ids)), val_rows), val_rows


@register("sequence_classification")
def build_sequence_classification(cfg: SequenceClassificationData) -> Splits:
    """Train and val from the TRAIN file (stratified, seeded), test from the TEST file."""
    train_path, test_path = Path(cfg.train_path), Path(cfg.test_path)
    labels, values, lengths = read_ucr(train_path)
    classes = sort_labels(set(labels))
    if len(classes) < 2:
        raise DataError(f"{train_path}: only one class ({classes[0]!r}); classification needs at least two")
    class_ids = class_ids_of(labels, classes, train_path)
    train_rows, val_rows = carve_validation(class_ids, cfg.val_ratio, cfg.seed)
    test_labels, test_values, test_lengths = read_ucr(test_path)
    pipeline = {"labels": classes, "length": int(lengths.max()), "znorm": cfg.znorm}
    spec = DataSpec(task="classification", input_size=cfg.segment, output_size=len(classes), pipeline=pipeline)
    return Splits(
        train=to_split(values[train_rows], lengths[train_rows], class_ids[train_rows], cfg.znorm, cfg.segment),
        val=to_split(values[val_rows], lengths[val_rows], class_ids[val_rows], cfg.znorm, cfg.segment),
        test=to_split(test_values, test_lengths, class_ids_of(test_labels, classes, test_path), cfg.znorm, cfg.segment),
        spec=spec,
    )


@register_loader("sequence_classification")
def load_ucr_file(cfg: SequenceClassificationData, spec: DataSpec, path: Path) -> Split:
    """A new UCR file through the training label map and normalization."""
    labels, values, lengths = read_ucr(path)
    return to_split(values, lengths, class_ids_of(labels, spec.pipeline["labels"], path), cfg.znorm, cfg.segment)
