"""`text_classification`: labelled texts from CSV, TSV, JSONL or regex-parsed lines, split with
stratification (or read from separate val/test files), tokenized by characters or a regex, and padded into one tensor per split."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..config import TextClassificationData
from ..errors import listing, short_repr
from .base import DataError, DataSpec, Split, Splits, check_header, register, register_loader
from .labels import fit_label_map, label_ids, stratified_split
from .text import PAD, UNK, choose_vocab, read_chunks

Examples = tuple[list[str], list[str], list[int]]  # texts, labels, line numbers


def read_examples(path: Path, cfg: TextClassificationData) -> Examples:
    """Parse every non-blank record; a record without its text or label names file and line."""
    text = "".join(read_chunks(path, cfg.encoding, cfg.encoding_errors))
    if cfg.format == "lines":
        records = parse_lines(path, text, re.compile(cfg.line_pattern))
    elif cfg.format == "jsonl":
        records = parse_jsonl(path, text, cfg.text_field, cfg.label_field)
    else:
        records = parse_table(path, text, "," if cfg.format == "csv" else "\t", cfg)
    if not records[0]:
        raise DataError(f"{path}: no examples (only blank lines or a header)")
    for label, line in zip(records[1], records[2]):
        if not label:
            raise DataError(f"{path}:{line}: the label is empty")
    return records


def parse_lines(path: Path, text: str, pattern: re.Pattern) -> Examples:
    texts, labels, lines = [], [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = pattern.match(line)
        if match is None:
            raise DataError(f"{path}:{number}: the line does not match line_pattern {pattern.pattern!r}: {line[:60]!r}")
        texts.append(match["text"])
        labels.append(match["label"].strip())
        lines.append(number)
    return texts, labels, lines


def parse_jsonl(path: Path, text: str, text_key, label_key) -> Examples:
    texts, labels, lines = [], [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        for key in (text_key, label_key):
            if not isinstance(record, dict) or str(key) not in record:
                raise DataError(f"{path}:{number}: the record has no key {str(key)!r}")
            value = record[str(key)]
            if value is None:  # str() would make it the text or class 'None'
                raise DataError(f"{path}:{number}: {str(key)!r} is null")
            if isinstance(value, (dict, list)):
                raise DataError(f"{path}:{number}: {str(key)!r} is not a string or number: {short_repr(value)}")
        texts.append(str(record[str(text_key)]))
        labels.append(str(record[str(label_key)]).strip())
        lines.append(number)
    return texts, labels, lines


def parse_table(path: Path, text: str, delimiter: str, cfg: TextClassificationData) -> Examples:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    names: list[str] | None = next(reader, None) if cfg.header else None
    if names is not None:
        check_header(path, names)
    columns = [column_index(path, names, field) for field in (cfg.text_field, cfg.label_field)]
    texts, labels, lines = [], [], []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if max(columns) >= len(row):
            raise DataError(
                f"{path}:{reader.line_num}: the row has {len(row)} column(s); column {max(columns)} is missing"
            )
        texts.append(row[columns[0]])
        labels.append(row[columns[1]].strip())
        lines.append(reader.line_num)
    return texts, labels, lines


def column_index(path: Path, names: list[str] | None, field: str | int) -> int:
    """A column by 0-based index, or by header name (an error lists the names there are)."""
    if isinstance(field, int) or (names is None and str(field).isdigit()):
        return int(field)
    if names is None:
        raise DataError(f"{path}: column {field!r} needs a header row (header: true) or a 0-based index")
    if field not in names:
        raise DataError(f"{path}: no column {field!r}; the header has {listing([repr(n) for n in names])}")
    return names.index(field)


def tokenize(texts: list[str], pipeline: dict) -> list[list[str]]:
    """Lowercase, split into characters or `token_pattern` matches, keep the first `max_len`."""
    pattern = re.compile(pipeline["token_pattern"])
    limit = pipeline["max_len"]
    out = []
    for text in texts:
        text = text.lower() if pipeline["lowercase"] else text
        tokens = list(text) if pipeline["tokenizer"] == "char" else pattern.findall(text)
        out.append(tokens[:limit] if limit else tokens)
    return out


def encode(tokens: list[list[str]], vocab: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (n, longest) padded with `<pad>`, lengths (n,)); an empty text becomes one `<unk>`."""
    index = {token: i for i, token in enumerate(vocab)}
    unk = index[UNK]
    rows = [[index.get(t, unk) for t in row] or [unk] for row in tokens]
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
    inputs = torch.full((len(rows), int(lengths.max())), index[PAD], dtype=torch.long)
    valid = torch.arange(inputs.shape[1])[None, :] < lengths[:, None]
    inputs[valid] = torch.tensor([i for row in rows for i in row], dtype=torch.long)  # row-major fill
    return inputs, lengths


def pick(examples: Examples, index: np.ndarray) -> Examples:
    return tuple([part[i] for i in index.tolist()] for part in examples)  # type: ignore[return-value]


def make_split(path: Path, examples: Examples, pipeline: dict) -> Split:
    texts, labels, lines = examples
    inputs, lengths = encode(tokenize(texts, pipeline), pipeline["vocab"])
    return Split(inputs, torch.from_numpy(label_ids(path, labels, lines, pipeline["labels"])), lengths)


def hold_out(
    examples: Examples,
    other: str | None,
    ratio: float | None,
    seed: int,
    path: Path,
    split: str,
    cfg: TextClassificationData,
) -> tuple[Path, Examples, Examples]:
    """(source file, held-out part, rest): the `other` file when given, else a stratified `ratio` of `examples`."""
    if other is not None:
        return Path(other), read_examples(Path(other), cfg), examples
    ratio_name = "test_ratio" if split == "test" else "val_ratio"
    kept, held = stratified_split(examples[1], ratio, seed, path, split, ratio_name)
    return path, pick(examples, held), pick(examples, kept)


@register("text_classification")
def build_text_classification(cfg: TextClassificationData) -> Splits:
    """Read; test from `test_path` or carved from train, val from `val_path` or carved from the rest;
    fit vocabulary and labels on the training split only."""
    path = Path(cfg.path)
    examples = read_examples(path, cfg)
    classes = fit_label_map(examples[1])  # every class keeps an example in train (stratified_split)
    if len(classes) < 2:
        raise DataError(
            f"{path}: every example has the label {short_repr(classes[0])}; classification needs at least two classes"
        )
    test_path, test, examples = hold_out(examples, cfg.test_path, cfg.test_ratio, cfg.seed, path, "test", cfg)
    val_path, val, train = hold_out(examples, cfg.val_path, cfg.val_ratio, cfg.seed + 1, path, "validation", cfg)
    pipeline = {
        "tokenizer": cfg.tokenizer,
        "token_pattern": cfg.token_pattern,
        "lowercase": cfg.lowercase,
        "max_len": cfg.max_len,
        "labels": classes,
    }
    counts = Counter(token for row in tokenize(train[0], pipeline) for token in row)
    pipeline["vocab"] = choose_vocab(counts, [PAD, UNK], cfg.min_freq, cfg.max_size)
    spec = DataSpec(
        task="classification",
        input_size=len(pipeline["vocab"]),
        output_size=len(classes),
        tokens=True,
        pipeline=pipeline,
    )
    return Splits(
        make_split(path, train, pipeline),
        make_split(val_path, val, pipeline),
        make_split(test_path, test, pipeline),
        spec,
    )


@register_loader("text_classification")
def load_text_classification(cfg: TextClassificationData, spec: DataSpec, path: Path) -> Split:
    """`eval --data` / `predict`: a new file in the training format, through the saved pipeline."""
    return make_split(path, read_examples(path, cfg), spec.pipeline)
