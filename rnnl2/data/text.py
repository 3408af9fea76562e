"""Text files → token ids, fast: bytes are decoded in line-aligned chunks and numericalized with
numpy (a code-point table for characters, one dict lookup per word), the vocabulary comes from
the training text only, and `text_lm` streams are batched for truncated BPTT (`StreamSplit`)."""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np
import torch

from ..config import TextLMData
from ..errors import listing
from .base import Batch, DataError, DataSpec, Split, Splits, check_file, register, register_loader

CHUNK_BYTES = 1 << 22  # read 4 MiB at a time (then to the end of that line): memory stays flat
UNK, PAD, EOS = "<unk>", "<pad>", "<eos>"  # the special tokens of every vocabulary, defined here only
IGNORE_INDEX = -100  # cross_entropy's ignore_index (evaluate.IGNORE_INDEX): padded targets


# ------------------------------------------------------------------------ reading


def read_chunks(
    path: Path, encoding: str, errors: str, lowercase: bool = False, raw_ascii: bool = False
) -> Iterator[str | bytes]:
    """The file as text, in pieces that end at a line end; bad bytes are errors naming the line.

    With `raw_ascii`, an all-ASCII piece of an ASCII-compatible encoding comes back undecoded,
    as bytes (one byte per character): the fast path of character-level reading."""
    path = check_file(path)
    raw_ascii = raw_ascii and is_ascii_compatible(path, encoding)
    lines_before, seen = 0, False
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            chunk += handle.readline()
            seen = True
            nul = chunk.find(b"\0")
            if nul >= 0:
                line = lines_before + chunk.count(b"\n", 0, nul) + 1
                raise DataError(f"{path}:{line}: not a text file (it holds a NUL byte)")
            if raw_ascii and chunk.isascii():
                text = chunk
            else:
                try:
                    text = chunk.decode(encoding, errors)
                except UnicodeDecodeError as error:
                    line = lines_before + chunk.count(b"\n", 0, error.start) + 1
                    raise DataError(
                        f"{path}:{line}: not valid {encoding} text (byte 0x{chunk[error.start]:02x}); set "
                        f"data.encoding (e.g. latin-1) or data.encoding_errors: replace"
                    ) from None
                except LookupError:
                    raise DataError(f"{path}: unknown text encoding {encoding!r}") from None
            lines_before += chunk.count(b"\n")
            yield text.lower() if lowercase else text
    if not seen:
        raise DataError(f"{path}: the file is empty")


def is_ascii_compatible(path: Path, encoding: str) -> bool:
    """Whether bytes 0-127 decode to the same characters (utf-8, latin-1, cp1252, ...)."""
    try:
        return bytes(range(128)).decode(encoding) == "".join(map(chr, range(128)))
    except (LookupError, UnicodeDecodeError):
        return False


def smallest_dtype(size: int) -> np.dtype:
    """The narrowest integer type that holds ids below `size` and that torch can index with."""
    return np.dtype(np.uint8 if size <= 256 else np.int16 if size <= 32767 else np.int32)


class CharInterner:
    """A character's id before the vocabulary is known is its code point: no table to grow, and
    an ASCII chunk is used as it is, one byte per character."""

    raw_ascii = True

    def __init__(self):
        self.size = 0  # 1 + the largest code point seen

    def ids(self, text: str | bytes) -> np.ndarray:
        if isinstance(text, bytes):
            codes = np.frombuffer(text, np.uint8)
        else:
            codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
            top = int(codes.max()) if codes.size else 0
            codes = codes.astype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32)
        if codes.size:
            self.size = max(self.size, int(codes.max()) + 1)
        return codes

    def tokens(self) -> list[str]:
        return [chr(code) for code in range(self.size)]


class WordIndex(dict):
    """word → id, in order of first appearance; an unseen word gets the next id."""

    def __missing__(self, word: str) -> int:
        self[word] = value = len(self)
        return value


class WordInterner:
    """Whitespace-separated words → ids in order of first appearance; `<eos>` at line ends."""

    raw_ascii = False

    def __init__(self, eos: bool = True):
        self.index = WordIndex()
        self.eos = eos

    @property
    def size(self) -> int:
        return len(self.index)

    def ids(self, text: str) -> np.ndarray:
        words = text.replace("\n", f" {EOS} ").split() if self.eos else text.split()
        ids = (
            np.frombuffer(array("i", map(self.index.__getitem__, words)), np.int32) if words else np.zeros(0, np.int32)
        )
        return ids.astype(smallest_dtype(len(self.index)))

    def tokens(self) -> list[str]:
        return list(self.index)


def numericalize(path: Path, interner, encoding: str, errors: str, lowercase: bool) -> np.ndarray:
    """Every token of a file as an interner id (one array); a file with no token is an error."""
    parts, last = [], ""
    for text in read_chunks(path, encoding, errors, lowercase, raw_ascii=interner.raw_ascii):
        parts.append(interner.ids(text))
        last = text[-1:] or last
    if isinstance(interner, WordInterner) and interner.eos and last != "\n":
        parts.append(interner.ids("\n"))  # the last line has no newline: it still ends a sentence
    ids = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    del parts
    if ids.size == 0:
        raise DataError(f"{path}: no tokens (the file holds only whitespace)")
    return ids


def count_ids(ids: np.ndarray, size: int) -> np.ndarray:
    """How often each id occurs, a slice at a time (bincount widens its input to int64)."""
    counts = np.zeros(size, dtype=np.int64)
    for start in range(0, len(ids), CHUNK_BYTES):
        counts += np.bincount(ids[start : start + CHUNK_BYTES], minlength=size)
    return counts


def apply_table(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """table[ids], a slice at a time, so the index is never widened all at once."""
    out = np.empty(len(ids), dtype=table.dtype)
    for start in range(0, len(ids), CHUNK_BYTES):
        np.take(table, ids[start : start + CHUNK_BYTES], out=out[start : start + CHUNK_BYTES])
    return out


def choose_vocab(counts: dict[str, int], specials: list[str], min_freq: int, max_size: int | None) -> list[str]:
    """Specials first, then tokens by falling count (ties alphabetical), cut by min_freq and max_size."""
    kept = sorted((t for t, c in counts.items() if c >= min_freq and t not in specials), key=lambda t: (-counts[t], t))
    vocab = list(specials) + kept
    return vocab[:max_size] if max_size else vocab


def remap_table(interner, vocab: list[str]) -> np.ndarray:
    """interner id → vocabulary id; tokens outside the vocabulary → `<unk>`."""
    table = np.full(interner.size, vocab.index(UNK), dtype=smallest_dtype(len(vocab)))
    if isinstance(interner, CharInterner):
        for final, token in enumerate(vocab):
            if len(token) == 1 and ord(token) < interner.size:
                table[ord(token)] = final
        return table
    for final, token in enumerate(vocab):
        if token in interner.index:
            table[interner.index[token]] = final
    return table


# ------------------------------------------------------------------------ batching


@dataclass(frozen=True)
class StreamSplit(Split):
    """One token stream for truncated BPTT. `inputs` (and `targets`, the same tensor) hold all N
    tokens in a compact dtype; the targets of a window are the stream shifted by one.

    stream  a b c d e f g h i j k l m      N = 13, batch_size 3 → 4 columns of 12 predictions
    inputs  [a b c d]   targets [b c d e]  row 0     windows of `bptt` columns, read left to right;
            [e f g h]           [f g h i]  row 1     row b of window k+1 continues row b of window k,
            [i j k l]           [j k l m]  row 2     so the hidden state carries across windows

    When the predictions do not fill the grid, the tail is padded and its targets are ignored:
    no token is dropped."""

    bptt: int = 35
    stateful: bool = True
    unit: ClassVar[str] = "tokens"  # tokens predicted: every token but the first

    def __len__(self) -> int:
        return max(self.inputs.shape[0] - 1, 0)  # tokens to predict

    def to(self, device: torch.device) -> "StreamSplit":
        stream = self.inputs.to(device)
        return replace(self, inputs=stream, targets=stream)

    def num_columns(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def num_batches(self, batch_size: int) -> int:
        return -(-self.num_columns(batch_size) // self.bptt)

    def hold_out(self, fraction: float, generator: torch.Generator) -> tuple["StreamSplit", "StreamSplit"]:
        """(the head, the tail): the last `fraction` of the stream is held out (`generator` unused:
        a stream cannot be shuffled). No held-out prediction is a training target; the one pair
        across the cut belongs to neither."""
        tokens = self.inputs.shape[0]
        held = min(max(round(fraction * tokens), 2), tokens - 2)
        if tokens < 4:
            raise DataError(
                f"l2.adapt.holdout_fraction: the training stream has {tokens} tokens; too few to hold some out"
            )
        head, tail = self.inputs[: tokens - held], self.inputs[tokens - held :]
        return replace(self, inputs=head, targets=head), replace(self, inputs=tail, targets=tail)

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Windows in stream order (a generator is ignored: the order is the point)."""
        count, columns = len(self), self.num_columns(batch_size)
        pad = batch_size * columns - count
        stream = self.inputs
        if pad:
            stream = torch.cat([stream, stream.new_zeros(pad)])
        inputs = stream[: batch_size * columns].view(batch_size, columns)
        targets = stream[1 : batch_size * columns + 1].view(batch_size, columns)
        rows = torch.arange(batch_size, device=stream.device)[:, None] * columns
        for start in range(0, columns, self.bptt):
            stop = min(start + self.bptt, columns)
            window_targets = targets[:, start:stop].long()  # (batch, bptt)
            if pad:
                position = rows + torch.arange(start, stop, device=stream.device)[None, :]
                window_targets = window_targets.masked_fill(position >= count, IGNORE_INDEX)
            yield Batch(inputs[:, start:stop].long(), window_targets, None)


# ------------------------------------------------------------------------ text_lm


def lm_files(cfg: TextLMData) -> list[Path]:
    """[file] for a ratio split, else [train, valid, test] from a folder or explicit paths."""
    if cfg.path is None:
        return [Path(cfg.train_path), Path(cfg.val_path), Path(cfg.test_path)]
    path = Path(cfg.path)
    if not path.is_dir():
        return [path]
    roles: dict[str, list[Path]] = {"train": [], "valid": [], "test": []}
    for file in sorted(p for p in path.iterdir() if p.is_file()):
        name = file.name.lower()
        role = (
            "train"
            if "train" in name
            else "valid"
            if re.search(r"valid|(^|[^a-z])val([^a-z]|$)", name)
            else "test"
            if "test" in name
            else None
        )
        if role:
            roles[role].append(file)
    for role, matches in roles.items():
        if len(matches) != 1:
            listed = ": " + listing([p.name for p in matches]) if matches else ""
            raise DataError(f"{path}: expected exactly one *{role}* file, found {len(matches) or 'none'}{listed}")
    return [roles["train"][0], roles["valid"][0], roles["test"][0]]


def make_interner(level: str, eos: bool = True):
    return CharInterner() if level == "char" else WordInterner(eos=eos)


@register("text_lm")
def build_text_lm(cfg: TextLMData) -> Splits:
    """Numericalize the files, build the vocabulary on the training part, cut the streams."""
    files = lm_files(cfg)
    interner = make_interner(cfg.level, eos=cfg.eos)
    read = lambda path: numericalize(path, interner, cfg.encoding, cfg.encoding_errors, cfg.lowercase)
    if len(files) == 1:
        ids = read(files[0])
        bounds = np.cumsum([int(len(ids) * r) for r in cfg.ratios[:-1]]).tolist()
        parts = np.split(ids, bounds)
        if len(parts) == 2:
            parts.append(parts[1])  # [train, val]: the test metrics reuse the val part
        names = [f"{files[0]} ({part} part, ratios {cfg.ratios})" for part in ("train", "val", "test")]
    else:
        parts = [read(path) for path in files]
        names = [str(path) for path in files]
    for part, name in zip(parts, names):
        if len(part) < 2:
            raise DataError(f"{name}: the split holds {len(part)} token(s); a language model needs at least 2")
    counts = count_ids(parts[0], interner.size)
    seen = np.flatnonzero(counts).tolist()
    tokens = interner.tokens()
    vocab = choose_vocab({tokens[i]: int(counts[i]) for i in seen}, [UNK], cfg.min_freq, cfg.max_size)
    table = remap_table(interner, vocab)
    streams = [torch.from_numpy(apply_table(table, part)) for part in parts[:2]]
    streams.append(streams[1] if parts[2] is parts[1] else torch.from_numpy(apply_table(table, parts[2])))
    spec = DataSpec(
        task="lm",
        input_size=len(vocab),
        output_size=len(vocab),
        tokens=True,
        pipeline={"vocab": vocab, "level": cfg.level, "eos": cfg.eos, "lowercase": cfg.lowercase},
    )
    train, val, test = (StreamSplit(s, s, bptt=cfg.bptt) for s in streams)
    return Splits(train, val, test, spec)


def encode_lm_text(text: str, pipeline: dict) -> list[int]:
    """A string (a prompt) through a trained vocabulary, tokenized as the files were; no line end
    is added after the last token, so generation continues the text."""
    interner = make_interner(pipeline["level"], eos=pipeline.get("eos", True))
    ids = interner.ids(text.lower() if pipeline.get("lowercase") else text)
    return apply_table(remap_table(interner, pipeline["vocab"]), ids).tolist()


def encode_lm_file(path: Path, pipeline: dict, encoding: str, errors: str) -> torch.Tensor:
    """A new file through a trained vocabulary: unseen tokens → `<unk>`."""
    interner = make_interner(pipeline["level"], eos=pipeline["eos"])
    ids = numericalize(path, interner, encoding, errors, pipeline["lowercase"])
    return torch.from_numpy(apply_table(remap_table(interner, pipeline["vocab"]), ids))


@register_loader("text_lm")
def load_text_lm(cfg: TextLMData, spec: DataSpec, path: Path) -> StreamSplit:
    """`eval --data`: a new text file as one stream, batched like the validation split."""
    stream = encode_lm_file(path, spec.pipeline, cfg.encoding, cfg.encoding_errors)
    if len(stream) < 2:
        raise DataError(f"{path}: holds {len(stream)} token(s); a language model needs at least 2")
    return StreamSplit(stream, stream, bptt=cfg.bptt)
