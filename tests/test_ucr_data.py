"""sequence_classification: UCR TSV/CSV parsing, label maps, the seeded validation carve-out,
z-normalization, variable lengths, and bad input through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers import write_config
from rnnl2.cli import app
from rnnl2.config import SequenceClassificationData
from rnnl2.data import DataError, build_splits


def write_ucr(path: Path, rows: list[tuple[object, list[float]]], sep: str = "\t", crlf: bool = True) -> Path:
    """UCR lines `label<sep>v1<sep>v2...`, CRLF and no final newline by default."""
    lines = [sep.join([str(label), *(f"{v:g}" for v in values)]) for label, values in rows]
    path.write_bytes(("\r\n" if crlf else "\n").join(lines).encode())
    return path


def two_class_rows(count: int, labels=(-1, 1), length: int = 6, seed: int = 0) -> list[tuple[object, list[float]]]:
    rng = np.random.default_rng(seed)
    return [(labels[i % 2], (rng.standard_normal(length) + 3 * (i % 2)).tolist()) for i in range(count)]


def ucr(tmp_path: Path, train_rows, test_rows, sep="\t", **extra) -> SequenceClassificationData:
    train = write_ucr(tmp_path / "X_TRAIN.tsv", train_rows, sep)
    test = write_ucr(tmp_path / "X_TEST.tsv", test_rows, sep)
    return SequenceClassificationData(train_path=str(train), test_path=str(test), **extra)


@pytest.mark.parametrize("sep", ["\t", ","])
def test_reads_tab_and_comma_files(tmp_path, sep):
    splits = build_splits(ucr(tmp_path, two_class_rows(20), two_class_rows(6, seed=1), sep=sep))
    assert splits.spec.task == "classification" and splits.spec.output_size == 2
    assert splits.spec.pipeline["labels"] == ["-1", "1"]  # numeric order, not text order
    assert (len(splits.train), len(splits.val), len(splits.test)) == (16, 4, 6)
    assert splits.test.inputs.shape == (6, 6, 1) and splits.test.targets.tolist() == [0, 1] * 3


def test_string_labels_and_numeric_spellings(tmp_path):
    splits = build_splits(
        ucr(tmp_path, two_class_rows(10, labels=("gun", "point")), two_class_rows(4, labels=("point", "gun")))
    )
    assert splits.spec.pipeline["labels"] == ["gun", "point"] and splits.test.targets.tolist() == [1, 0, 1, 0]
    spelled = build_splits(
        ucr(tmp_path, two_class_rows(10, labels=("1", "2")), two_class_rows(4, labels=("1.0", "2.0e0")))
    )
    assert spelled.test.targets.tolist() == [0, 1, 0, 1]


def test_validation_carve_out_is_stratified_and_seeded(tmp_path):
    cfg = ucr(tmp_path, two_class_rows(40), two_class_rows(4), val_ratio=0.25, seed=3)
    a, b = build_splits(cfg), build_splits(cfg)
    assert torch.equal(a.val.inputs, b.val.inputs)
    assert a.val.targets.bincount().tolist() == [5, 5]
    other = build_splits(cfg.model_copy(update={"seed": 4}))
    assert not torch.equal(a.val.inputs, other.val.inputs)
    together = torch.cat([a.train.inputs, a.val.inputs]).flatten(1)
    assert len({tuple(row.tolist()) for row in together}) == 40  # nothing lost or repeated


def test_znorm_per_series(tmp_path):
    splits = build_splits(ucr(tmp_path, two_class_rows(10), two_class_rows(4), znorm=True))
    series = splits.test.inputs[..., 0].double()
    assert torch.allclose(series.mean(1), torch.zeros(4, dtype=torch.double), atol=1e-6)
    assert torch.allclose(series.std(1, unbiased=False), torch.ones(4, dtype=torch.double), atol=1e-5)


def test_variable_length_series_get_lengths(tmp_path):
    train = [(1, [1, 2, 3]), (2, [4, 5]), (1, [6, 7, 8]), (2, [9, 10, 11]), (1, [1, 2]), (2, [3, 4, 5])]
    path = tmp_path / "V_TRAIN.tsv"
    path.write_text("\n".join("\t".join(map(str, [label, *values])) for label, values in train))
    cfg = SequenceClassificationData(train_path=str(path), test_path=str(path), val_ratio=0.34)
    splits = build_splits(cfg)
    assert splits.test.lengths.tolist() == [3, 2, 3, 3, 2, 3]
    assert splits.test.inputs[1, :, 0].tolist() == [4, 5, 0]


def test_every_class_keeps_a_training_example_and_the_pipeline_holds_only_labels(tmp_path):
    rows = [(1, [0.0, 1.0]), (2, [1.0, 0.0]), (2, [1.0, 1.0]), (2, [0.0, 0.0])]
    splits = build_splits(ucr(tmp_path, rows, rows, val_ratio=0.6))  # round(0.6 · 1) would take class 1's only row
    assert splits.train.targets.tolist() == [0, 1] and splits.val.targets.tolist() == [1, 1]
    assert splits.spec.pipeline == {"labels": ["1", "2"]}


def test_unseen_test_label_names_it(tmp_path):
    with pytest.raises(DataError, match=r"X_TEST.tsv: line 2: label '7' was not seen in training \(known: -1, 1\)"):
        build_splits(ucr(tmp_path, two_class_rows(10), [(1, [0.0] * 6), (7, [0.0] * 6)]))


def test_val_path_is_the_validation_split_and_train_keeps_every_series(tmp_path):
    val = write_ucr(tmp_path / "X_VAL.tsv", [(1, [3.0] * 6)] * 5)  # one class
    splits = build_splits(ucr(tmp_path, two_class_rows(20), two_class_rows(6, seed=1), val_path=str(val)))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (20, 5, 6)
    assert splits.val.targets.tolist() == [1] * 5 and splits.spec.pipeline == {"labels": ["-1", "1"]}
    write_ucr(val, [(1, [0.0] * 6), (7, [0.0] * 6)])
    with pytest.raises(DataError, match=r"X_VAL.tsv: line 2: label '7' was not seen in training \(known: -1, 1\)"):
        build_splits(ucr(tmp_path, two_class_rows(20), two_class_rows(6), val_path=str(val)))


def test_val_ratio_and_val_path_are_refused_together(tmp_path):
    fields = {"train_path": "A_TRAIN.tsv", "test_path": "A_TEST.tsv"}
    assert SequenceClassificationData.model_validate(fields).val_ratio == 0.2
    with pytest.raises(ValueError, match="give val_path .* or val_ratio .*, not both"):
        SequenceClassificationData.model_validate(fields | {"val_path": "A_VAL.tsv", "val_ratio": 0.2})


TINY = {
    "name": "ucr",
    "device": "cpu",
    "model": {"cell": "gru", "hidden_size": 4},
    "train": {"epochs": 1, "batch_size": 8},
}


@pytest.mark.parametrize(
    "train_text, message",
    [
        ("", "the file is empty"),
        ("\n".join(f"1\t{i}\t{i + 1}" for i in range(10)), "only one class ('1')"),
        ("1\t0.5\t0.1\n2\t0.3\tabc\n1\t1\t2\n2\t1\t2", "line 2, column 3: 'abc' is not a finite number"),
        ("1\t0.5\t\t0.2\n2\t0.3\t1\t2\n1\t1\t2\t3\n2\t1\t2\t3", "line 1: missing value inside the series"),
        (
            "1\t0.5\t0.1\n2\t0.3\t0.2\n1,5\t1\t2\n2\t1\t2\n1\t3\t4",  # `1,5` would be a third class
            "line 3: '1,5' holds a comma, but the file is tab-separated",
        ),
        ("1\t0.5\t0.1\n2\t0.3\t0.2\n3\t1\t2", "the validation split is empty: 3 examples in 3 classes"),
        ("1\t0.5\t0.1\n \t0.3\t0.2\n2\t1\t2\n1\t1\t2\n2\t1\t2", "line 2: the label is empty"),  # not a class ''
    ],
)
def test_bad_ucr_files_exit_2_without_a_run_folder(tmp_path, train_text, message):
    train = tmp_path / "BAD_TRAIN.tsv"
    train.write_text(train_text)
    test = write_ucr(tmp_path / "OK_TEST.tsv", two_class_rows(4, labels=(1, 2)))
    config = write_config(
        tmp_path,
        TINY
        | {
            "data": {
                "kind": "sequence_classification",
                "train_path": str(train),
                "test_path": str(test),
                "val_ratio": 0.5,
            }
        },
    )
    result = CliRunner().invoke(app, ["train", str(config), "--runs-dir", str(tmp_path / "runs"), "-q"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "BAD_TRAIN.tsv" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.yaml"))


def test_train_end_to_end(tmp_path):
    cfg = ucr(tmp_path, two_class_rows(16), two_class_rows(6, seed=1), val_ratio=0.25)
    config = write_config(tmp_path, TINY | {"data": cfg.model_dump()})
    result = CliRunner().invoke(app, ["train", str(config), "--runs-dir", str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 0, result.output
    assert '"test_accuracy"' in result.output


def test_segments_make_shorter_sequences_of_more_features(tmp_path):
    rows = [(1, [1, 2, 3, 4, 5]), (2, [6, 7, 8, 9, 10])] * 4
    splits = build_splits(ucr(tmp_path, rows, rows, segment=2))
    assert splits.spec.input_size == 2 and splits.test.inputs.shape == (8, 3, 2)
    assert splits.test.inputs[0].tolist() == [[1, 2], [3, 4], [5, 0]]
