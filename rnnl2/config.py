"""The validated schema of a run (`RunConfig`), `load_config` with `--set` overrides,
and the errors rnnl2 reports to users instead of tracebacks."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence, Union

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator


class Rnnl2Error(Exception):
    """An error the user can fix (bad config, data or checkpoint): shown as a message, exit code 2."""


class ConfigError(Rnnl2Error):
    """The config file or an override is invalid."""


class Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, populate_by_name=True
    )


# --------------------------------------------------------------------------- data


def expand_path(value: str, info: ValidationInfo) -> str:
    """Expand `~`, `$VAR` and `${VAR}`; resolve a relative path against the config file's folder.

    An unset variable is an error that names it, rather than a path with a literal `$` in it.
    """
    for match in re.finditer(r"\$(?:\{(\w+)\}|(\w+))", value):
        name = match.group(1) or match.group(2)
        if name not in os.environ:
            raise ValueError(f"environment variable ${name} is not set")
    path = Path(os.path.expanduser(os.path.expandvars(value)))
    base = (info.context or {}).get("base_dir")
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return str(path)


FilePath = Annotated[str, AfterValidator(expand_path)]
"""A path field of a data config: expanded and made absolute when the config is loaded."""



class SeedTaggingData(Section):
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
    num_train: int = Field(2000, ge=1)
    """Training sequences."""
    num_val: int = Field(500, ge=1)
    """Validation sequences."""
    num_test: int = Field(500, ge=1)
    """Test sequences."""
    seed: int = 0
    """Seed of the generator; independent of the run's `seed`, so seed sweeps keep the data fixed."""


class SineData(Section):
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
    num_train: int = Field(2000, ge=1)
    """Training windows."""
    num_val: int = Field(500, ge=1)
    """Validation windows."""
    num_test: int = Field(500, ge=1)
    """Test windows."""
    seed: int = 0
    """Seed of the generator; independent of the run's `seed`."""


class AddingData(Section):
    """Hochreiter & Schmidhuber's adding problem: sum the two marked values of a long sequence."""

    kind: Literal["adding"] = "adding"
    seq_len: int = Field(50, ge=2, le=100_000)
    """Sequence length T; one marker falls in each half."""
    num_train: int = Field(10_000, ge=1)
    """Training sequences."""
    num_val: int = Field(1000, ge=1)
    """Validation sequences."""
    num_test: int = Field(1000, ge=1)
    """Test sequences."""
    seed: int = 0
    """Seed of the generator; independent of the run's `seed`."""


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
    """Chronological train/val/test fractions of the rows; the default split is (0.7, 0.1, 0.2)."""
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
    val_ratio: float = Field(0.2, gt=0.0, lt=1.0)
    """Fraction of each training class held out for validation (seeded)."""
    znorm: bool = False
    """z-normalize each series by its own mean and (population) std."""
    segment: int = Field(1, ge=1, le=100_000)
    """Values per time step: the series is cut into segments of this many values (zero-padded at
    the end), so the network reads length/segment steps of `segment` features (SegRNN-style)."""
    seed: int = 0
    """Seed of the validation carve-out; independent of the run's `seed`."""


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
    val_ratio: float = Field(0.1, gt=0.0, lt=1.0)
    """Fraction of the training examples carved out (stratified, seeded) for validation."""
    test_ratio: float = Field(0.2, gt=0.0, lt=1.0)
    """Without `test_path`: fraction of `path` held out (stratified, seeded) for testing."""
    seed: int = 0
    """Seed of the stratified splits; independent of the run's `seed`."""
    encoding: str = "utf-8"
    """Text encoding of the files (TREC's train file needs latin-1)."""
    encoding_errors: Literal["strict", "replace", "ignore"] = "strict"
    """strict: an undecodable byte is an error naming file and line; replace: it becomes U+FFFD."""

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


DATA_KINDS: tuple[type[Section], ...] = (
    SeedTaggingData, SineData, AddingData, ForecastData, SequenceClassificationData,
    TextLMData, TextClassificationData,
)
DataConfig = Annotated[Union[DATA_KINDS], Field(discriminator="kind")]

# -------------------------------------------------------------------------- model


class ModelConfig(Section):
    cell: Literal["rnn", "lstm", "gru"] = "lstm"
    """Recurrent cell: PyTorch's fused nn.RNN, nn.LSTM or nn.GRU."""
    nonlinearity: Literal["tanh", "relu"] = "tanh"
    """Activation of the plain `rnn` cell (ignored by lstm and gru)."""
    hidden_size: int = Field(64, ge=1, le=65_536)
    """Units per recurrent layer (per direction)."""
    num_layers: int = Field(1, ge=1, le=64)
    """Stacked recurrent layers."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout between recurrent layers and before the head (Keras: Dropout after each LSTM)."""
    bidirectional: bool = False
    """Run a second recurrent stack backwards in time and concatenate both."""
    embedding_dim: int = Field(64, ge=1, le=65_536)
    """Size of the token embedding (used only when the inputs are tokens)."""
    pooling: Literal["last", "mean", "max"] = "last"
    """How whole-sequence heads summarise the time steps (classification and forecasting)."""
    init_scale: float | None = Field(None, gt=0.0)
    """Draw every parameter from U(−s, s), as Zaremba et al. do (s = 0.1); unset: PyTorch's
    defaults (N(0, 1) embeddings, U(±1/√hidden) recurrent weights)."""


# ----------------------------------------------------------------------------- L2

GROUPS = ("weight_ih", "weight_hh", "bias", "embedding", "head")


class L2Config(Section):
    lambda_: float = Field(0.0, ge=0.0, alias="lambda")
    """λ in `loss = data_loss + (λ/2) · Σ θ²`, so the gradient term is λ·θ (Keras l2(x): λ = 2x)."""
    mode: Literal["penalty", "weight_decay", "decoupled"] = "penalty"
    """penalty: add (λ/2)Σθ² to the loss; weight_decay: the optimizer's coupled weight_decay=λ;
    decoupled: AdamW-style θ ← θ − lr·λ·θ."""
    apply_to: list[str] = Field(
        default_factory=lambda: ["weight_ih", "weight_hh", "embedding", "head"], min_length=0
    )
    """Penalized parameters: groups (weight_ih, weight_hh, bias, embedding, head) or globs on
    parameter names such as `rnn.weight_ih_l0*`."""
    lambdas: dict[str, float] = Field(default_factory=dict)
    """Per-group λ overriding `lambda` for the selected parameters a group or glob names."""

    @model_validator(mode="after")
    def _check_lambdas(self) -> "L2Config":
        for key, value in self.lambdas.items():
            if value < 0:
                raise ValueError(f"lambdas.{key} must be >= 0, got {value}")
        return self


# ---------------------------------------------------------------------- optimizer


class SchedulerConfig(Section):
    name: Literal["none", "step", "multistep", "cosine", "plateau"] = "none"
    """Learning-rate schedule, stepped once per epoch."""
    step_size: int = Field(10, ge=1)
    """step: epochs between decays."""
    milestones: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)
    """multistep: epochs after which the rate is multiplied by gamma (Zaremba: [4, 5, …, 12])."""
    gamma: float = Field(0.5, gt=0.0, le=1.0)
    """step, multistep and plateau: factor the learning rate is multiplied by."""
    patience: int = Field(2, ge=0)
    """plateau: epochs without improvement of the validation loss before a decay."""
    min_lr: float = Field(0.0, ge=0.0)
    """cosine and plateau: the lowest learning rate."""

    @model_validator(mode="after")
    def _check_milestones(self) -> "SchedulerConfig":
        if self.name == "multistep" and not self.milestones:
            raise ValueError("multistep needs milestones, e.g. [4, 5, 6]")
        if self.milestones != sorted(set(self.milestones)):
            raise ValueError(f"milestones must increase, got {self.milestones}")
        return self


class OptimizerConfig(Section):
    name: Literal["sgd", "adam", "adamw", "rmsprop", "adagrad"] = "adam"
    """Optimizer from torch.optim."""
    lr: float = Field(1e-3, gt=0.0)
    """Learning rate."""
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    """sgd and rmsprop: momentum."""
    nesterov: bool = False
    """sgd: Nesterov momentum (needs momentum > 0)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """adam and adamw: decay rates of the moment estimates."""
    eps: float = Field(1e-8, gt=0.0)
    """adam, adamw, rmsprop, adagrad: term added to the denominator."""
    alpha: float = Field(0.99, gt=0.0, lt=1.0)
    """rmsprop: smoothing constant."""
    scheduler: SchedulerConfig = SchedulerConfig()
    """Learning-rate schedule."""

    @model_validator(mode="after")
    def _check_nesterov(self) -> "OptimizerConfig":
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optimizer.name=sgd and momentum > 0")
        for beta in self.betas:
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"betas must lie in [0, 1), got {list(self.betas)}")
        return self


# -------------------------------------------------------------------------- train


class EarlyStoppingConfig(Section):
    metric: str = "val_loss"
    """Validation metric that picks the best checkpoint and drives early stopping."""
    mode: Literal["min", "max"] = "min"
    """Whether a lower (min) or higher (max) value of `metric` is better."""
    patience: int | None = Field(None, ge=1)
    """Stop after this many epochs without improvement; null never stops early."""


class TrainConfig(Section):
    epochs: int = Field(10, ge=1, le=1_000_000)
    """Passes over the training split."""
    max_steps: int | None = Field(None, ge=1)
    """Stop after this many optimizer steps in total, even mid-epoch."""
    batch_size: int = Field(32, ge=1, le=1_000_000)
    """Sequences per optimizer step."""
    clip_grad_norm: float | None = Field(None, gt=0.0)
    """Clip the global gradient norm to this bound; null disables clipping."""
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    """Which validation metric is best, and when to stop."""
    eval_batch_size: int = Field(256, ge=1)
    """Sequences per batch when evaluating."""
    checkpoint_every_steps: int | None = Field(None, ge=1)
    """Also write checkpoints/last.pt every this many optimizer steps, mid-epoch, so a long epoch
    resumes (`rnnl2 train --resume`) close to where it stopped; null: only at the end of each epoch."""


class OutputConfig(Section):
    save_checkpoints: bool = True
    """Write checkpoints/last.pt and checkpoints/best.pt."""
    tensorboard: bool = False
    """Also log every epoch's metrics to <run>/tensorboard/ (needs `pip install 'rnnl2[tensorboard]'`)."""


# ---------------------------------------------------------------------------- run


class RunConfig(Section):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """Run name; runs are written to runs/<name>/<time>-<id>/."""
    seed: int = 0
    """Seed of parameter initialisation, dropout and shuffling."""
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    """auto (CUDA, then MPS, else CPU), cpu, mps, cuda or cuda:N."""
    data: DataConfig = Field(default_factory=SeedTaggingData)
    """The dataset; `kind` picks the variant."""
    model: ModelConfig = ModelConfig()
    """The recurrent network."""
    l2: L2Config = L2Config()
    """Which parameters get L2 regularisation, how much, and how."""
    optimizer: OptimizerConfig = OptimizerConfig()
    """Optimizer and learning-rate schedule."""
    train: TrainConfig = TrainConfig()
    """Training loop."""
    output: OutputConfig = OutputConfig()
    """What the run folder receives."""

    @model_validator(mode="after")
    def _check_combinations(self) -> "RunConfig":
        if self.l2.mode == "weight_decay" and self.optimizer.name == "adamw":
            raise ValueError(
                "l2.mode=weight_decay is coupled decay, but adamw decays decoupled; "
                "use l2.mode=decoupled with adamw, or optimizer.name=adam"
            )
        if self.l2.mode == "decoupled" and self.optimizer.name == "adagrad":
            raise ValueError(
                "l2.mode=decoupled is not defined for adagrad; use l2.mode=penalty or weight_decay"
            )
        return self


def to_plain_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as YAML/JSON-ready builtins, with field aliases (`lambda`)."""
    return cfg.model_dump(mode="json", by_alias=True)


# ------------------------------------------------------------------------ loading


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping safely; errors name the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config ({err})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {err.problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `a.b=value` overrides (values parsed as YAML) to a nested mapping, in order."""
    for item in overrides:
        dotted, sep, value = item.partition("=")
        if not sep or not dotted.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set l2.lambda=1e-4")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({err})") from None
        *parents, leaf = dotted.strip().split(".")
        node = raw
        for depth, key in enumerate(parents):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                where = ".".join(parents[: depth + 1])
                raise ConfigError(f"--set {item!r}: {where} is a value, not a section")
            node = child
        node[leaf] = parsed
    return raw


def load_config(path: Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML file, apply `a.b=value` overrides, validate the result."""
    raw = apply_overrides(read_yaml(Path(path)), overrides)
    raw.setdefault("name", Path(path).stem)
    return validate_config(raw, source=str(path), base_dir=Path(path).resolve().parent)


def validate_config(raw: dict[str, Any], source: str = "config", base_dir: Path | None = None) -> RunConfig:
    """Validate a raw mapping; a failure lists every bad key with its value and the rule.

    Relative data paths resolve against `base_dir` (the config file's folder)."""
    try:
        return RunConfig.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as err:
        lines = [describe_error(e, raw) for e in err.errors()]
        raise ConfigError(f"{source}: invalid config\n" + "\n".join(f"  {l}" for l in lines)) from None


def describe_error(error: dict[str, Any], raw: dict[str, Any]) -> str:
    """One readable line for one pydantic error: `key.path: what is wrong, got value`."""
    loc = strip_union_tags(list(error["loc"]), raw)
    path = ".".join(str(part) for part in loc) or "(top level)"
    if len(path) > 120:  # a huge key
        path = short_repr(path)
    if error["type"] == "extra_forbidden":
        hint = suggest_key(loc, raw)
        return f"{path}: unknown key{hint}"
    if error["type"] == "missing":
        return f"{path}: required key is missing"
    if error["type"] == "union_tag_invalid":
        ctx = error["ctx"]
        return f"{path}.kind: must be one of {ctx['expected_tags']}, got {short_repr(ctx['tag'])}"
    message = lower_first(error["msg"].removeprefix("Value error, "))
    value = error.get("input")
    if isinstance(value, dict):  # a rule across keys: the message names them
        return f"{path}: {message}"
    return f"{path}: {message}, got {short_repr(value)}"


def short_repr(value: Any, limit: int = 80) -> str:
    """repr() cut to `limit` characters, so a huge value cannot flood the error message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}… ({len(text):,} characters)"


def lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def strip_union_tags(loc: list[Any], raw: dict[str, Any]) -> list[Any]:
    """Drop the discriminator value pydantic inserts after `data` (data.sine.lookback → data.lookback)."""
    if len(loc) > 1 and loc[0] == "data":
        kind = raw.get("data", {}).get("kind", "seed_tagging") if isinstance(raw.get("data"), dict) else None
        if loc[1] == kind:
            return [loc[0], *loc[2:]]
    return loc


def section_model(loc: Sequence[Any], raw: dict[str, Any]) -> type[BaseModel] | None:
    """The pydantic model of the section that holds the key at `loc`."""
    model: type[BaseModel] = RunConfig
    for key in loc[:-1]:
        if model is RunConfig and key == "data":
            data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
            kinds = {m.model_fields["kind"].default: m for m in DATA_KINDS}
            model = kinds.get(data.get("kind", "seed_tagging"), SeedTaggingData)
            continue
        field = model.model_fields.get(str(key))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def suggest_key(loc: Sequence[Any], raw: dict[str, Any]) -> str:
    """`; did you mean 'lambda'?` when a close valid key exists, else the list of valid keys."""
    model = section_model(loc, raw)
    if model is None:
        return ""
    names = [f.alias or name for name, f in model.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; valid keys: {', '.join(names)}"

