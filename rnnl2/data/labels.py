"""Class labels, shared by the classification kinds (`text_classification`, `sequence_classification`):
one label map (labels → class ids) and one seeded, stratified split."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import listing, short_repr
from .base import DataError

MANY_CLASSES = 1000  # more classes than this usually means the label was read from the wrong place


def fit_label_map(labels: Sequence[str]) -> list[str]:
    """The classes in class-id order: numeric order when every label is a number, else text order."""
    distinct = set(labels)
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return sorted(distinct)


def class_count_hint(classes: int) -> str:
    """A hint for a message about a classification with suspiciously many classes, else ''."""
    if classes < MANY_CLASSES:
        return ""
    return (
        f"; {classes:,} classes is more than a classification usually has: check data.format and the "
        f"label field (data.label_field or line_pattern)"
    )


def label_ids(path: Path, labels: Sequence[str], lines: Sequence[int], classes: list[str]) -> np.ndarray:
    """Class id of every label (int64); a label the training data did not have names itself and its line."""
    index = {label: i for i, label in enumerate(classes)}
    for label, line in zip(labels, lines):
        if label not in index:
            raise DataError(
                f"{path}: line {line}: label {short_repr(label)} was not seen in training "
                f"(known: {listing(classes)}){class_count_hint(len(classes))}"
            )
    return np.array([index[label] for label in labels], dtype=np.int64)


def stratified_split(
    labels: Sequence | np.ndarray, ratio: float, seed: int, path: Path, split: str, ratio_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held) row indices, sorted: `ratio` of each class held out at random (seeded), every
    class keeping at least one example. An empty held-out part is an error naming `split`."""
    rng = np.random.default_rng(seed)
    classes, class_of = np.unique(np.asarray(labels), return_inverse=True)
    held = []
    for label in range(len(classes)):  # in sorted label order, so a seed always draws the same rows
        members = np.flatnonzero(class_of == label)
        count = min(int(round(len(members) * ratio)), len(members) - 1)
        held.append(rng.permutation(members)[:count])
    held_index = np.sort(np.concatenate(held)).astype(np.int64)
    if held_index.size == 0:
        raise DataError(
            f"{path}: the {split} split is empty: {len(labels):,} examples in {len(classes):,} "
            f"classes are too few for {ratio_name} {ratio} (each class keeps at least one "
            f"example for training){class_count_hint(len(classes))}"
        )
    return np.setdiff1d(np.arange(len(labels)), held_index), held_index
