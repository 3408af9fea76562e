"""`text_classification`: labelled texts from CSV, TSV, JSONL or regex-parsed lines, split with
stratification, tokenized by characters or a regex, and padded into one tensor per split."""

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
from . import DataError, DataSpec, Split, Splits, register, register_loader
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
        texts.append(str(record[str(text_key)]))
        labels.append(str(record[str(label_key)]).strip())
        lines.append(number)
    return texts, labels, lines


def parse_table(path: Path, text: str, delimiter: str, cfg: TextClassificationData) -> Examples:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    names: list[str] | None = next(reader, None) if cfg.header else None
    columns = [column_index(path, names, field) for field in (cfg.text_field, cfg.label_field)]
    texts, labels, lines = [], [], []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if max(columns) >= len(row):
            raise DataError(f"{path}:{reader.line_num}: the row has {len(row)} column(s); column {max(columns)} is missing")
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
        raise DataError(f"{path}: no column {field!r}; the header has {', '.join(map(repr, names))}")
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


def label_ids(path: Path, labels: list[str], lines: list[int], known: list[str]) -> torch.Tensor:
    """Class ids of `labels`; a label the model was not trained on names itself and its line."""
    index = {label: i for i, label in enumerate(known)}
    for label, line in zip(labels, lines):
        if label not in index:
            raise DataError(f"{path}:{line}: label {label!r} does not occur in the training data "
                            f"(known: {', '.join(known)})")
    return torch.tensor([index[label] for label in labels], dtype=torch.long)


def stratified_holdout(labels: list[str], ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held) indices, sorted: `ratio` of each class held out at random (seeded); each
    class keeps at least one example."""
    rng = np.random.default_rng(seed)
    array = np.array(labels, dtype=object)
    held = []
    for label in sorted(set(labels)):
        members = np.flatnonzero(array == label)
        count = min(int(round(len(members) * ratio)), len(members) - 1)
        held.append(rng.permutation(members)[:count])
    held_index = np.sort(np.concatenate(held)).astype(np.int64)
    kept_index = np.setdiff1d(np.arange(len(labels)), held_index)
    return kept_index, held_index


def pick(examples: Examples, index: np.ndarray) -> Examples:
    return tuple([part[i] for i in index.tolist()] for part in examples)  # type: ignore[return-value]


def make_split(path: Path, examples: Examples, pipeline: dict) -> Split:
    texts, labels, lines = examples
    inputs, lengths = encode(tokenize(texts, pipeline), pipeline["vocab"])
    return Split(inputs, label_ids(path, labels, lines, pipeline["labels"]), lengths)


@register("text_classification")
def build_text_classification(cfg: TextClassificationData) -> Splits:
    """Read, carve test (unless `test_path`) and val from train, fit vocabulary and labels on train."""
    path = Path(cfg.path)
    examples = read_examples(path, cfg)
    if cfg.test_path is not None:
        test_path, test = Path(cfg.test_path), read_examples(Path(cfg.test_path), cfg)
    else:
        kept, held = stratified_holdout(examples[1], cfg.test_ratio, cfg.seed)
        test_path, test, examples = path, pick(examples, held), pick(examples, kept)
    kept, held = stratified_holdout(examples[1], cfg.val_ratio, cfg.seed + 1)
    train, val = pick(examples, kept), pick(examples, held)
    classes = sorted(set(train[1]))
    if len(classes) < 2:
        raise DataError(f"{path}: every example has the label {classes[0]!r}; classification needs at least two classes")
    for name, part in (("validation", val), ("test", test)):
        if not part[0]:
            raise DataError(f"{path}: the {name} split is empty ({len(examples[0])} examples are too few "
                            f"for val_ratio {cfg.val_ratio} / test_ratio {cfg.test_ratio})")
    pipeline = {"tokenizer": cfg.tokenizer, "token_pattern": cfg.token_pattern, "lowercase": cfg.lowercase,
                "max_len": cfg.max_len, "labels": classes}
    counts = Counter(token for row in tokenize(train[0], pipeline) for token in row)
    pipeline["vocab"] = choose_vocab(counts, [PAD, UNK], cfg.min_freq, cfg.max_size)
    spec = DataSpec(task="classification", input_size=len(pipeline["vocab"]), output_size=len(classes),
                    tokens=True, pipeline=pipeline)
    return Splits(make_split(path, train, pipeline), make_split(path, val, pipeline),
                  make_split(test_path, test, pipeline), spec)


@register_loader("text_classification")
def load_text_classification(cfg: TextClassificationData, spec: DataSpec, path: Path) -> Split:
    """`eval --data` / `predict`: a new file in the training format, through the saved pipeline."""
    return make_split(path, read_examples(path, cfg), spec.pipeline)
