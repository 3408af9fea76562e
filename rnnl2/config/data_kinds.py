"""One schema per `data.kind`; `DataConfig` picks the variant by its `kind` key."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import Field, model_serializer, model_validator

from .base import FilePath, Section, Seed

MAX_EXAMPLES = 10_000_000
"""The most sequences (or windows) a generated data kind makes per split."""
MAX_GENERATED_VALUES = 250_000_000
"""The most values (sequences × time steps × features, all splits) a generated data kind makes:
1 GB as float32, so a typo like `num_train: 1e12` is refused here instead of exhausting memory."""


def default_val_ratio(data: Any, default: float) -> Any:
    """Before validation: `val_ratio` and `val_path` exclude each other; with neither, `val_ratio` is `default`.

    A resolved config holds `val_ratio: null` beside a `val_path`, so it loads again unchanged."""
    if not isinstance(data, dict):
        return data
    if data.get("val_path") is not None and data.get("val_ratio") is not None:
        raise ValueError("give val_path (a validation file) or val_ratio (a carve-out of the training file), not both")
    if data.get("val_path") is None and data.get("val_ratio") is None:
        return {**data, "val_ratio": default}
    return data


def check_generated_size(name: str, sequences: int, values_per_sequence: int, per_sequence: str) -> None:
    """Refuse a generated dataset of more than MAX_GENERATED_VALUES values, naming what to lower."""
    total = sequences * values_per_sequence
    if total > MAX_GENERATED_VALUES:
        raise ValueError(
            f"{name} would generate {total:.3g} values ((num_train + num_val + num_test) × "
            f"{per_sequence}); the most is {MAX_GENERATED_VALUES:,} (about 1 GB): lower "
            f"num_train/num_val/num_test or the sequence size"
        )


class GeneratedData(Section):
    """A data kind generated in memory: refused when all its splits together would exceed
    MAX_GENERATED_VALUES. A subclass says how many values one sequence holds."""

    def values_per_sequence(self) -> tuple[int, str]:
        """(values in one sequence or window, how that number is made, for the message)."""
        raise NotImplementedError

    @model_validator(mode="after")
    def _check_size(self) -> GeneratedData:
        per_sequence, made_of = self.values_per_sequence()
        sequences = self.num_train + self.num_val + self.num_test
        check_generated_size(self.kind, sequences, per_sequence, made_of)
        return self


class SeedTaggingData(GeneratedData):
    """Per-time-step classification: each step's class depends on the last `memory` inputs."""

    kind: Literal["seed_tagging"] = "seed_tagging"
    input_dim: int = Field(16, ge=1, le=4096)
    """Features per time step."""
    num_classes: int = Field(5, ge=2, le=1000)
    """Classes per time step."""
    seq_len: int = Field(30, ge=1, le=100_000)
    """Time steps per sequence."""
    memory: int = Field(3, ge=1, le=100)
    """How many recent steps (current included) decide a step's class."""
    num_train: int = Field(2000, ge=1, le=MAX_EXAMPLES)
    """Training sequences. Each split holds at most MAX_EXAMPLES (10,000,000), and all of them
    at most MAX_GENERATED_VALUES (250,000,000 values, about 1 GB)."""
    num_val: int = Field(500, ge=1, le=MAX_EXAMPLES)
    """Validation sequences."""
    num_test: int = Field(500, ge=1, le=MAX_EXAMPLES)
    """Test sequences."""
    seed: Seed = 0
    """Seed of the generator; independent of the run's `seed`, so seed sweeps keep the data fixed."""

    def values_per_sequence(self) -> tuple[int, str]:
        return self.seq_len * self.input_dim, "seq_len × input_dim"


class SineData(GeneratedData):
    """Forecast a noisy sum of sines: `lookback` past values predict the next `horizon`."""

    kind: Literal["sine"] = "sine"
    lookback: int = Field(48, ge=1, le=100_000)
    """Past steps the model sees."""
    horizon: int = Field(12, ge=1, le=10_000)
    """Future steps the model predicts."""
    periods: list[float] = Field(default_factory=lambda: [12.0, 30.0, 71.0], min_length=1)
    """Periods (in steps) of the sine components; each sequence draws random phases and amplitudes."""
    noise: float = Field(0.1, ge=0.0)
    """Standard deviation of the Gaussian noise added to every value."""
    num_train: int = Field(2000, ge=1, le=MAX_EXAMPLES)
    """Training windows. Each split holds at most MAX_EXAMPLES (10,000,000), and all of them
    at most MAX_GENERATED_VALUES (250,000,000 values, about 1 GB)."""
    num_val: int = Field(500, ge=1, le=MAX_EXAMPLES)
    """Validation windows."""
    num_test: int = Field(500, ge=1, le=MAX_EXAMPLES)
    """Test windows."""
    seed: Seed = 0
    """Seed of the generator; independent of the run's `seed`."""

    def values_per_sequence(self) -> tuple[int, str]:
        return (self.lookback + self.horizon) * len(self.periods), "(lookback + horizon) × periods"


class AddingData(GeneratedData):
    """Hochreiter & Schmidhuber's adding problem: sum the two marked values of a long sequence."""

    kind: Literal["adding"] = "adding"
    seq_len: int = Field(50, ge=2, le=100_000)
    """Sequence length T; one marker falls in each half."""
    num_train: int = Field(10_000, ge=1, le=MAX_EXAMPLES)
    """Training sequences. Each split holds at most MAX_EXAMPLES (10,000,000), and all of them
    at most MAX_GENERATED_VALUES (250,000,000 values, about 1 GB)."""
    num_val: int = Field(1000, ge=1, le=MAX_EXAMPLES)
    """Validation sequences."""
    num_test: int = Field(1000, ge=1, le=MAX_EXAMPLES)
    """Test sequences."""
    seed: Seed = 0
    """Seed of the generator; independent of the run's `seed`."""

    def values_per_sequence(self) -> tuple[int, str]:
        return self.seq_len * 2, "seq_len × 2 features"


class ForecastData(Section):
    """Forecast from a CSV: `lookback` rows of `features` predict the next `horizon` rows of `targets`.

    Rows split chronologically; val and test windows start `lookback` rows before their
    boundary, so no target row is seen twice (the ETT protocol with `rows: [8640, 2880, 2880]`)."""

    kind: Literal["timeseries_forecast"] = "timeseries_forecast"
    path: FilePath
    """CSV file with a header row (CRLF and a missing final newline are fine)."""
    time_column: str | None = None
    """Column of timestamps: parsed, checked strictly increasing, never a feature; needed for `dates`."""
    features: list[str] | None = Field(None, min_length=1)
    """Input columns; null means every column except `time_column`."""
    targets: list[str] | None = Field(None, min_length=1)
    """Columns to forecast (numeric); null means the numeric `features`."""
    lookback: int = Field(96, ge=1, le=100_000)
    """Past rows the model sees (L)."""
    horizon: int = Field(1, ge=1, le=10_000)
    """Future rows the model predicts (H)."""
    stride: int = Field(1, ge=1)
    """Rows between the starts of consecutive windows."""
    ratios: tuple[float, float, float] | None = None
    """Chronological train/val/test fractions of the rows; the default split is (0.7, 0.1, 0.2).
    Each boundary is the floor of its cumulative fraction: train ⌊0.7·n⌋ rows, val ⌊0.8·n⌋ − ⌊0.7·n⌋."""
    rows: tuple[int, int, int] | None = None
    """Train/val/test row counts from the top; later rows are unused (ETT: [8640, 2880, 2880])."""
    dates: list[str] | None = Field(None, min_length=2, max_length=3)
    """[val_start, test_start] or [val_start, test_start, end): split by `time_column`."""
    scaling: Literal["standard", "minmax", "none"] = "standard"
    """Per-column scaling fitted on the train rows only (standard uses the population std)."""
    missing: Literal["error", "ffill", "interpolate", "drop"] = "error"
    """Empty/NA cells: an error naming column and line, forward fill, linear interpolation, or
    drop the row. After ffill/interpolate, rows before the first observed value are dropped."""
    one_hot: list[str] = Field(default_factory=list)
    """Categorical feature columns to one-hot encode (categories from the train rows)."""
    window_norm: bool = False
    """Subtract each window's last observed row from its inputs and add it back to the forecast
    (inside the model; needs `targets` among `features`)."""
    channel_independent: bool = False
    """Forecast each column on its own with one shared network (PatchTST-style): the model sees
    one channel at a time; needs `targets` equal to the numeric `features`."""
    segment: int = Field(1, ge=1, le=100_000)
    """With `channel_independent`: values per recurrent step, so each channel's lookback is read
    as lookback/segment steps of `segment` values (SegRNN); lookback must be a multiple of it."""
    season: int | None = Field(None, ge=1, le=100_000)
    """Rows per season (12 for monthly data, 24 for hourly): adds the seasonal-naive baseline
    (each forecast row repeats the row one season earlier) beside repeat-last; at most `lookback`."""

    @model_validator(mode="after")
    def _check_segment(self) -> "ForecastData":
        if self.segment > 1 and not self.channel_independent:
            raise ValueError("segment needs channel_independent: true")
        if self.lookback % self.segment:
            raise ValueError(f"lookback ({self.lookback}) must be a multiple of segment ({self.segment})")
        if self.season is not None and self.season > self.lookback:
            raise ValueError(
                f"season ({self.season}) must be at most lookback ({self.lookback}): the window holds the rows it repeats"
            )
        return self

    @model_serializer(mode="wrap")
    def _drop_unset_season(self, handler: Any) -> dict[str, Any]:
        """Left out while unset, so a config written before `season` existed keeps its hash."""
        data = handler(self)
        if self.season is None:
            data.pop("season", None)
        return data

    @model_validator(mode="after")
    def _check_split(self) -> "ForecastData":
        chosen = [name for name in ("ratios", "rows", "dates") if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise ValueError(f"give only one of ratios, rows and dates, got {' and '.join(chosen)}")
        if self.ratios is not None and (min(self.ratios) < 0 or sum(self.ratios) > 1 + 1e-9):
            raise ValueError(f"ratios must be >= 0 and sum to at most 1, got {list(self.ratios)}")
        if self.rows is not None and min(self.rows) < 1:
            raise ValueError(f"rows must be positive counts, got {list(self.rows)}")
        if self.dates is not None and self.time_column is None:
            raise ValueError("dates needs time_column")
        return self


class SequenceClassificationData(Section):
    """Classify whole series in the UCR format: label in column 0, the values after it."""

    kind: Literal["sequence_classification"] = "sequence_classification"
    train_path: FilePath
    """TRAIN file (tab- or comma-separated, no header)."""
    test_path: FilePath
    """TEST file, same format."""
    val_path: FilePath | None = None
    """Separate validation file, same format; without it a stratified `val_ratio` of the TRAIN file is held out."""
    val_ratio: float | None = Field(None, gt=0.0, lt=1.0)
    """Without `val_path`: fraction of each training class held out for validation (seeded); default 0.2.
    Refused together with `val_path`."""
    znorm: bool = False
    """z-normalize each series by its own mean and (population) std."""
    segment: int = Field(1, ge=1, le=100_000)
    """Values per time step: the series is cut into segments of this many values (zero-padded at
    the end), so the network reads length/segment steps of `segment` features (SegRNN-style)."""
    seed: Seed = 0
    """Seed of the validation carve-out; independent of the run's `seed`."""

    @model_validator(mode="before")
    @classmethod
    def _check_validation_source(cls, data: Any) -> Any:
        return default_val_ratio(data, 0.2)


class TextLMData(Section):
    """Language modelling on plain text: one file cut by `ratios`, or train/valid/test files.

    The token stream is cut into `train.batch_size` contiguous columns (eval: `train.eval_batch_size`)
    and read in windows of `bptt` steps; the hidden state carries across windows (stateful)."""

    kind: Literal["text_lm"] = "text_lm"
    path: FilePath | None = None
    """One text file split by `ratios`, or a folder holding exactly one *train*, one *valid* (or
    *val*) and one *test* file (the PTB layout: ptb.train.txt, ptb.valid.txt, ptb.test.txt)."""
    train_path: FilePath | None = None
    """Explicit training file (with `val_path` and `test_path`, instead of `path`)."""
    val_path: FilePath | None = None
    """Explicit validation file."""
    test_path: FilePath | None = None
    """Explicit test file."""
    ratios: list[float] = Field(default_factory=lambda: [0.9, 0.1], min_length=2, max_length=3)
    """One-file split, in order: [train, val] (nanoGPT: first 90% train, last 10% val; the test
    metrics then reuse the val part) or [train, val, test]. Must sum to 1."""
    level: Literal["char", "word"] = "char"
    """Tokens are characters (newline included) or whitespace-separated words."""
    eos: bool = True
    """word level: append `<eos>` at each line end, as every PTB reference does."""
    lowercase: bool = False
    """Lowercase the text before tokenizing."""
    min_freq: int = Field(1, ge=1)
    """Tokens seen fewer times in the training text become `<unk>`."""
    max_size: int | None = Field(None, ge=2)
    """Keep at most this many tokens (the most frequent, `<unk>` included)."""
    bptt: int = Field(35, ge=1, le=100_000)
    """Time steps per truncated-BPTT window."""
    encoding: str = "utf-8"
    """Text encoding of the files (e.g. latin-1)."""
    encoding_errors: Literal["strict", "replace", "ignore"] = "strict"
    """strict: an undecodable byte is an error naming file and line; replace: it becomes U+FFFD."""

    @model_validator(mode="after")
    def _check_sources(self) -> "TextLMData":
        explicit = (self.train_path, self.val_path, self.test_path)
        if self.path is None and None in explicit:
            raise ValueError("give path (a file or a folder) or all of train_path, val_path, test_path")
        if self.path is not None and any(p is not None for p in explicit):
            raise ValueError("give path or train_path/val_path/test_path, not both")
        if min(self.ratios) <= 0 or abs(sum(self.ratios) - 1.0) > 1e-6:
            raise ValueError(f"ratios must be positive and sum to 1, got {list(self.ratios)}")
        return self


class TextClassificationData(Section):
    """One label per text, from CSV, TSV, JSONL or regex-parsed lines (TREC: `LABEL:fine text`)."""

    kind: Literal["text_classification"] = "text_classification"
    path: FilePath
    """Training file (also the source of the test split when `test_path` is not given)."""
    test_path: FilePath | None = None
    """Separate test file; without it a stratified `test_ratio` of `path` is held out (seeded)."""
    val_path: FilePath | None = None
    """Separate validation file (e.g. an official dev set), read like `path` through the training
    vocabulary and labels; without it a stratified `val_ratio` of the training part is held out."""
    format: Literal["csv", "tsv", "jsonl", "lines"] = "csv"
    """csv/tsv: one row per example (a header row unless `header: false`); jsonl: one object per
    line; lines: each line parsed by `line_pattern`."""
    header: bool = True
    """csv/tsv: the first row names the columns."""
    text_field: str | int = "text"
    """Column name (or 0-based index) or JSON key of the text."""
    label_field: str | int = "label"
    """Column name (or 0-based index) or JSON key of the label."""
    line_pattern: str = r"^(?P<label>\S+)\s+(?P<text>.*)$"
    """lines: a regex with named groups `label` and `text` (configs/trec.yaml reads TREC's `COARSE:fine text`)."""
    tokenizer: Literal["char", "word"] = "word"
    """Characters, or the matches of `token_pattern`."""
    token_pattern: str = r"\w+|[^\w\s]"
    """word: the regex whose matches are the tokens (default: runs of word characters, and each punctuation mark)."""
    lowercase: bool = True
    """Lowercase the text before tokenizing."""
    max_len: int | None = Field(None, ge=1, le=1_000_000)
    """Keep the first `max_len` tokens of each text."""
    min_freq: int = Field(1, ge=1)
    """Tokens seen fewer times in the training split become `<unk>`."""
    max_size: int | None = Field(None, ge=3)
    """Keep at most this many tokens (the most frequent, `<pad>` and `<unk>` included)."""
    val_ratio: float | None = Field(None, gt=0.0, lt=1.0)
    """Without `val_path`: fraction of the training examples carved out (stratified, seeded) for
    validation; default 0.1. Refused together with `val_path`."""
    test_ratio: float = Field(0.2, gt=0.0, lt=1.0)
    """Without `test_path`: fraction of `path` held out (stratified, seeded) for testing."""
    seed: Seed = 0
    """Seed of the stratified splits; independent of the run's `seed`."""
    encoding: str = "utf-8"
    """Text encoding of the files (TREC's train file needs latin-1)."""
    encoding_errors: Literal["strict", "replace", "ignore"] = "strict"
    """strict: an undecodable byte is an error naming file and line; replace: it becomes U+FFFD."""

    @model_validator(mode="before")
    @classmethod
    def _check_validation_source(cls, data: Any) -> Any:
        return default_val_ratio(data, 0.1)

    @model_validator(mode="after")
    def _check_fields(self) -> "TextClassificationData":
        indexes = [name for name in ("text_field", "label_field") if isinstance(getattr(self, name), int)]
        if self.format in ("csv", "tsv") and self.header and indexes:
            which = "is a column index, which needs" if len(indexes) == 1 else "are column indexes, which need"
            raise ValueError(
                f"{' and '.join(indexes)} {which} header: false; with header: true the first row "
                f"is read as column names, not as an example, so give the names instead"
            )
        return self

    @model_validator(mode="after")
    def _check_patterns(self) -> "TextClassificationData":
        for name in ("line_pattern", "token_pattern"):
            try:
                compiled = re.compile(getattr(self, name))
            except re.error as error:
                raise ValueError(f"{name} is not a valid regex: {error}") from None
            if name == "line_pattern" and not {"label", "text"} <= set(compiled.groupindex):
                raise ValueError("line_pattern needs the named groups (?P<label>...) and (?P<text>...)")
        return self


AnyDataKind = Union[
    SeedTaggingData,
    SineData,
    AddingData,
    ForecastData,
    SequenceClassificationData,
    TextLMData,
    TextClassificationData,
]
DataConfig = Annotated[AnyDataKind, Field(discriminator="kind")]
DATA_KINDS: tuple[type[Section], ...] = get_args(AnyDataKind)
