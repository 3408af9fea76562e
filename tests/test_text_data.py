"""text_lm and text_classification: reading, vocabularies, stream batching, splits, loaders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from rnnl2.config import ModelConfig, TextClassificationData, TextLMData
from rnnl2.data import DataError, build_splits, load_new_data
from rnnl2.data.labels import label_ids
from rnnl2.data.text import IGNORE_INDEX, StreamSplit
from rnnl2.evaluate import macro_f1
from rnnl2.models import build_model

TEXT = "to be or not to be\nthat is the question\n" * 8


def lm_config(**fields) -> TextLMData:
    return TextLMData.model_validate({"kind": "text_lm", "bptt": 5, **fields})


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def decode(split, vocab) -> list[str]:
    return [vocab[i] for i in split.inputs.tolist()]


# ------------------------------------------------------------------------ text_lm


def test_char_ratio_split_follows_nanogpt_and_builds_vocab_from_train_only(tmp_path):
    path = write(tmp_path, "input.txt", "abcabcabc" * 10 + "xyz")  # 93 chars; x, y, z only in val
    splits = build_splits(lm_config(path=str(path), ratios=[0.9, 0.1]))
    vocab = splits.spec.pipeline["vocab"]
    assert vocab[0] == "<unk>" and set(vocab[1:]) == {"a", "b", "c"}
    assert len(splits.train.inputs) == int(93 * 0.9) and len(splits.val.inputs) == 93 - int(93 * 0.9)
    assert decode(splits.val, vocab)[-3:] == ["<unk>"] * 3
    assert torch.equal(splits.test.inputs, splits.val.inputs)  # two ratios: test repeats val
    assert splits.spec.task == "lm" and splits.spec.tokens and splits.spec.input_size == len(vocab)


def test_min_freq_and_max_size_send_rare_tokens_to_unk(tmp_path):
    path = write(tmp_path, "input.txt", "aaaaabbbbccd" * 3)
    vocab = build_splits(lm_config(path=str(path), ratios=[0.5, 0.25, 0.25], min_freq=4)).spec.pipeline["vocab"]
    assert vocab == ["<unk>", "a", "b"]  # the train half "aaaaabbbbccdaaaaab": a 10, b 5, c 2, d 1
    vocab = build_splits(lm_config(path=str(path), ratios=[0.5, 0.25, 0.25], max_size=2)).spec.pipeline["vocab"]
    assert vocab == ["<unk>", "a"]


def ptb_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "ptb"
    folder.mkdir()
    write(folder, "ptb.train.txt", " the cat sat \n the dog sat \n a cat <unk> \n")
    write(folder, "ptb.valid.txt", " the bird sat \n")
    write(folder, "ptb.test.txt", " a dog sat")  # no final newline: the line still ends with <eos>
    return folder


def test_ptb_layout_appends_eos_per_line_and_maps_unseen_words_to_unk(tmp_path):
    splits = build_splits(lm_config(path=str(ptb_folder(tmp_path)), level="word"))
    vocab = splits.spec.pipeline["vocab"]
    assert decode(splits.train, vocab) == "the cat sat <eos> the dog sat <eos> a cat <unk> <eos>".split()
    assert decode(splits.val, vocab) == "the <unk> sat <eos>".split()  # bird is not in train
    assert decode(splits.test, vocab) == "a dog sat <eos>".split()
    assert vocab.count("<unk>") == 1 and vocab[0] == "<unk>"


def test_explicit_paths_and_a_folder_without_a_test_file(tmp_path):
    folder = ptb_folder(tmp_path)
    cfg = lm_config(
        train_path=str(folder / "ptb.train.txt"),
        val_path=str(folder / "ptb.valid.txt"),
        test_path=str(folder / "ptb.test.txt"),
        level="word",
    )
    assert len(build_splits(cfg).train) == 11
    (folder / "ptb.test.txt").unlink()
    with pytest.raises(DataError, match=r"exactly one \*test\* file"):
        build_splits(lm_config(path=str(folder), level="word"))


def windows(split: StreamSplit, batch_size: int):
    return [(b.inputs, b.targets) for b in split.batches(batch_size)]


@settings(deadline=None, max_examples=40)
@given(count=st.integers(2, 300), batch_size=st.integers(1, 12), bptt=st.integers(1, 9))
def test_stream_batching_loses_no_token_and_continues_each_column(count, batch_size, bptt):
    stream = torch.arange(count) % 251
    split = StreamSplit(stream, stream, bptt=bptt)
    parts = windows(split, batch_size)
    assert len(parts) == split.num_batches(batch_size)
    inputs = torch.cat([i for i, _ in parts], dim=1)  # (batch, columns)
    targets = torch.cat([t for _, t in parts], dim=1)
    valid = targets != IGNORE_INDEX
    assert torch.equal(targets[valid], stream[1:])  # every prediction exactly once, in order
    assert torch.equal(inputs[valid], stream[:-1])  # each target's input is the token before it
    for (_, before), (after, _) in zip(parts, parts[1:]):  # the next window picks up each row
        assert torch.equal(after[:, 0][before[:, -1] != IGNORE_INDEX], before[:, -1][before[:, -1] != IGNORE_INDEX])


def test_windows_are_long_and_bptt_wide():
    stream = torch.arange(101, dtype=torch.uint8)
    (first, *_rest) = StreamSplit(stream, stream, bptt=7).batches(4)
    assert first.inputs.shape == (4, 7) and first.inputs.dtype == torch.long and first.lengths is None


def test_lm_loader_reads_a_new_file_through_the_saved_vocabulary(tmp_path):
    cfg = lm_config(path=str(write(tmp_path, "train.txt", "abab" * 20)))
    spec = build_splits(cfg).spec
    split = load_new_data(cfg, spec, write(tmp_path, "new.txt", "abq"))
    assert decode(split, spec.pipeline["vocab"]) == ["a", "b", "<unk>"] and split.stateful


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "the file is empty"),
        (b"abc\nde\x00f\n", r"new.txt:2: not a text file"),
        (b"ok\nok\ncaf\xe9\n", r"new.txt:3: not valid utf-8 text \(byte 0xe9\)"),
        (b"  \n\n ", "no tokens"),
    ],
)
def test_unreadable_text_names_file_and_line(tmp_path, content, message):
    path = write(tmp_path, "new.txt", content)
    with pytest.raises(DataError, match=message):
        build_splits(lm_config(path=str(path), level="word", eos=False))


def test_encoding_options_read_latin1(tmp_path):
    path = write(tmp_path, "input.txt", b"caf\xe9 " * 30)
    assert "é" in build_splits(lm_config(path=str(path), encoding="latin-1")).spec.pipeline["vocab"]
    assert "\ufffd" in build_splits(lm_config(path=str(path), encoding_errors="replace")).spec.pipeline["vocab"]


def test_a_split_too_short_is_an_error_naming_the_file(tmp_path):
    path = write(tmp_path, "input.txt", "abcdefghijklmnopqrs")  # 19 chars: val gets 1 token
    with pytest.raises(DataError, match=r"input.txt \(val part.*holds 1 token"):
        build_splits(lm_config(path=str(path), ratios=[0.95, 0.05]))


# ------------------------------------------------------------------------ text_classification

TREC_LIKE = "".join(
    f"{label}:x {text} ?\n"
    for label, text in [
        ("NUM", "how many dogs"),
        ("NUM", "how far is it"),
        ("LOC", "where is paris"),
        ("LOC", "where is rome"),
        ("HUM", "who wrote it"),
        ("HUM", "who is she"),
    ]
    * 5
)


def cls_config(path: Path, **fields) -> TextClassificationData:
    return TextClassificationData.model_validate({"kind": "text_classification", "path": str(path), **fields})


def test_lines_format_with_a_stratified_seeded_split(tmp_path):
    path = write(tmp_path, "train.label", TREC_LIKE)
    cfg = cls_config(
        path, format="lines", line_pattern=r"^(?P<label>[^:]+):\S+\s+(?P<text>.*)$", test_ratio=0.2, val_ratio=0.25
    )
    splits = build_splits(cfg)
    assert splits.spec.pipeline["labels"] == ["HUM", "LOC", "NUM"]
    assert [len(splits.train), len(splits.val), len(splits.test)] == [18, 6, 6]
    assert torch.equal(torch.bincount(splits.test.targets), torch.tensor([2, 2, 2]))  # stratified
    assert torch.equal(build_splits(cfg).train.inputs, splits.train.inputs)  # seeded
    vocab = splits.spec.pipeline["vocab"]
    assert vocab[:2] == ["<pad>", "<unk>"] and "?" in vocab and "where" in vocab
    assert splits.train.lengths.min() >= 1 and splits.train.inputs.shape[1] == splits.train.lengths.max()


def test_csv_jsonl_and_headerless_tsv(tmp_path):
    rows = [("good film", "pos"), ("bad film", "neg")] * 10
    csv_path = write(tmp_path, "a.csv", "label,text\n" + "".join(f'{l},"{t}, really"\n' for t, l in rows))
    jsonl_path = write(tmp_path, "a.jsonl", "".join(json.dumps({"review": t, "y": l}) + "\n" for t, l in rows))
    tsv_path = write(tmp_path, "a.tsv", "".join(f"{l}\t{t}\n" for t, l in rows))
    for cfg in (
        cls_config(csv_path),
        cls_config(jsonl_path, format="jsonl", text_field="review", label_field="y"),
        cls_config(tsv_path, format="tsv", header=False, text_field=1, label_field=0),
    ):
        splits = build_splits(cfg)
        assert splits.spec.pipeline["labels"] == ["neg", "pos"] and len(splits.test) == 4


def test_vocabulary_comes_from_the_training_split_only(tmp_path):
    train = write(tmp_path, "train.tsv", "a\tred apple\nb\tblue sky\n" * 10)
    test = write(tmp_path, "test.tsv", "a\tred zebra\n")
    splits = build_splits(
        cls_config(train, format="tsv", header=False, text_field=1, label_field=0, test_path=str(test))
    )
    vocab = splits.spec.pipeline["vocab"]
    assert "zebra" not in vocab and splits.test.inputs[0].tolist() == [vocab.index("red"), vocab.index("<unk>")]


def test_val_path_is_the_validation_split_read_through_the_training_vocabulary(tmp_path):
    train = write(tmp_path, "train.tsv", "a\tred apple\nb\tblue sky\n" * 10)
    dev = write(tmp_path, "dev.tsv", "b\tred zebra\n\nb\tsky\nb\tblue\n")  # one class; zebra never trained on
    fields = {"format": "tsv", "header": False, "text_field": 1, "label_field": 0, "val_path": str(dev)}
    splits = build_splits(cls_config(train, test_path=str(train), **fields))
    vocab = splits.spec.pipeline["vocab"]
    assert len(splits.train) == 20 and len(splits.val) == 3  # nothing carved from train for validation
    assert splits.val.targets.tolist() == [1, 1, 1] and splits.spec.pipeline["labels"] == ["a", "b"]
    assert "zebra" not in vocab and splits.val.inputs[0].tolist() == [vocab.index("red"), vocab.index("<unk>")]
    carved = build_splits(cls_config(train, test_ratio=0.2, **fields))  # test still carved from path
    assert [len(carved.train), len(carved.val), len(carved.test)] == [16, 3, 4]


def test_an_unseen_label_in_the_val_file_names_file_and_line(tmp_path):
    train = write(tmp_path, "train.tsv", "a\tx\nb\ty\n" * 10)
    dev = write(tmp_path, "dev.tsv", "a\tx\nc\tz\n")
    with pytest.raises(DataError, match=r"dev.tsv: line 2: label 'c' was not seen in training \(known: a, b\)"):
        build_splits(cls_config(train, format="tsv", header=False, text_field=1, label_field=0, val_path=str(dev)))


def test_val_ratio_defaults_without_val_path_and_is_refused_beside_it():
    assert cls_config(Path("a.csv")).val_ratio == 0.1
    with_dev = cls_config(Path("a.csv"), val_path="dev.csv")
    assert with_dev.val_ratio is None
    assert TextClassificationData.model_validate(with_dev.model_dump()) == with_dev  # a resolved config reloads
    with pytest.raises(ValidationError, match="give val_path .* or val_ratio .*, not both"):
        cls_config(Path("a.csv"), val_path="dev.csv", val_ratio=0.1)


@pytest.mark.parametrize(
    "train, test, message",
    [
        ("a\tx\n" * 10, None, "every example has the label 'a'"),
        ("a\tx\nb\ty\n", None, "the test split is empty: 2 examples in 2 classes are too few for test_ratio 0.2"),
        ("a\tx\nb\ty\n" * 10, "c\tz\n", r"test.tsv: line 1: label 'c' was not seen in training \(known: a, b\)"),
        ("a\tx\nb\ty\n" * 10, "a\tz\nb\n", r"test.tsv:2: the row has 1 column"),
    ],
)
def test_bad_label_files_are_errors(tmp_path, train, test, message):
    fields = {"format": "tsv", "header": False, "text_field": 1, "label_field": 0}
    if test is not None:
        fields["test_path"] = str(write(tmp_path, "test.tsv", test))
    with pytest.raises(DataError, match=message):
        build_splits(cls_config(write(tmp_path, "train.tsv", train), **fields))


@pytest.mark.parametrize(
    "name, content, fields, message",
    [
        ("a.csv", "text,label\n" + "good,pos\nbad,neg\n" * 5 + "meh,\n", {}, "a.csv:12: the label is empty"),
        (
            "a.jsonl",
            '{"text": "good", "label": "pos"}\n{"text": "meh", "label": null}\n',
            {"format": "jsonl"},
            "a.jsonl:2: 'label' is null",
        ),
        ("a.jsonl", '{"text": "good", "label": " "}\n', {"format": "jsonl"}, "a.jsonl:1: the label is empty"),
        ("a.jsonl", '{"text": "good", "label": ["pos"]}\n', {"format": "jsonl"}, "a.jsonl:1: 'label' is not a string"),
        (
            "a.txt",
            "pos good\n: bad\n",
            {"format": "lines", "line_pattern": r"^(?P<label>\w*)\W+(?P<text>.*)$"},
            "a.txt:2: the label is empty",
        ),
        ("a.csv", "text,label,text\ngood,pos,x\n", {}, "a.csv: the header names column 'text' twice (columns 1 and 3)"),
    ],
)
def test_empty_null_or_ambiguous_labels_are_errors_naming_the_line(tmp_path, name, content, fields, message):
    with pytest.raises(DataError, match=re.escape(message)):
        build_splits(cls_config(write(tmp_path, name, content), **fields))


@pytest.mark.parametrize("fields", [{"text_field": 1, "label_field": 0}, {"label_field": 0}])
def test_column_indexes_with_a_header_row_are_refused(fields):
    with pytest.raises(ValidationError, match="needs? header: false"):
        TextClassificationData.model_validate({"path": "a.tsv", "format": "tsv", **fields})
    TextClassificationData.model_validate({"path": "a.tsv", "format": "tsv", "header": False, **fields})
    TextClassificationData.model_validate({"path": "a.jsonl", "format": "jsonl", **fields})  # JSON keys


def test_a_message_about_many_classes_shows_a_few_and_hints_at_the_format(tmp_path):
    train = write(tmp_path, "train.txt", "".join(f"w{i} a b\tpos\n" for i in range(30)) * 2)  # lines on a TSV
    test = write(tmp_path, "test.txt", "other a b\tpos\n")
    with pytest.raises(
        DataError,
        match=r"test.txt: line 1: label 'other' was not seen in training "
        r"\(known: 30 of them: w0, w1, w10, w11, w12, …\)$",
    ):
        build_splits(cls_config(train, format="lines", test_path=str(test), val_ratio=0.5))
    with pytest.raises(DataError) as error:
        label_ids(Path("new.tsv"), ["z"], [3], [f"c{i}" for i in range(5000)])
    assert len(str(error.value)) < 300 and "5,000 of them" in str(error.value)
    assert "5,000 classes is more than a classification usually has: check data.format" in str(error.value)


def test_missing_column_names_the_column(tmp_path):
    path = write(tmp_path, "a.csv", "sentence,label\nhi,a\n")
    with pytest.raises(DataError, match=r"no column 'text'; the header has 'sentence', 'label'"):
        build_splits(cls_config(path))


def test_classification_loader_rejects_an_unseen_label(tmp_path):
    cfg = cls_config(
        write(tmp_path, "a.tsv", "a\tx y\nb\ty z\n" * 10), format="tsv", header=False, text_field=1, label_field=0
    )
    spec = build_splits(cfg).spec
    split = load_new_data(cfg, spec, write(tmp_path, "new.tsv", "b\tx q\n"))
    assert split.targets.tolist() == [1] and split.lengths.tolist() == [2]
    with pytest.raises(DataError, match=r"new.tsv: line 2: label 'spam'"):
        load_new_data(cfg, spec, write(tmp_path, "new.tsv", "b\tx\nspam\tx\n"))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_padding_never_changes_a_prediction(tmp_path, cell, pooling):
    cfg = cls_config(
        write(tmp_path, "a.tsv", "a\tone two\nb\tthree four five six seven\n" * 10),
        format="tsv",
        header=False,
        text_field=1,
        label_field=0,
    )
    splits = build_splits(cfg)
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell=cell, hidden_size=8, embedding_dim=4, pooling=pooling), splits.spec).eval()
    inputs, lengths = splits.train.inputs, splits.train.lengths
    short = int(torch.argmin(lengths))
    alone, _ = model(inputs[short : short + 1, : lengths[short]], lengths[short : short + 1])
    padded, _ = model(inputs, lengths)
    assert inputs.shape[1] > lengths[short]
    torch.testing.assert_close(padded[short : short + 1], alone, rtol=1e-5, atol=1e-6)


def test_macro_f1_matches_a_hand_computation():
    confusion = torch.tensor([[3, 1, 0], [0, 2, 0], [0, 0, 0]])  # [true, predicted]; class 2 absent
    assert macro_f1(confusion) == pytest.approx((6 / 7 + 4 / 5) / 2)  # 2TP / (2TP + FP + FN)
    confusion[1, 2] = 2  # class 2 now predicted (wrongly): it counts, with F1 = 0
    assert macro_f1(confusion) == pytest.approx((6 / 7 + 4 / 7 + 0) / 3)
