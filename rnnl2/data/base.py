"""The data layer's core: `Split` batches tensors by index, `DataSpec` tells the model and eval
what the data looks like, and a registry maps each `data.kind` to its builder (each kind's
module registers itself; `rnnl2.data` re-exports these names)."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Literal, NamedTuple

import torch

from ..errors import DataError, short_repr

Task = Literal["tagging", "classification", "regression", "lm"]


def check_file(path: Path) -> Path:
    """`path` if it is a readable file; otherwise a DataError saying what it is instead."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a file")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: cannot be read (permission denied)")
    return path


def check_header(path: Path, names: list[str]) -> None:
    """A header that names one column twice is an error (pandas would rename the second `name.1`)."""
    seen: dict[str, int] = {}
    for number, name in enumerate(names, 1):
        if name in seen:
            raise DataError(
                f"{path}: the header names column {short_repr(name)} twice (columns {seen[name]} "
                f"and {number}); rename one"
            )
        seen[name] = number


@dataclass(frozen=True)
class DataSpec:
    """What the model and the metrics need to know about a dataset."""

    task: Task
    input_size: int
    """Features per time step (for token inputs: the vocabulary size)."""
    output_size: int
    """Classes (tagging, classification, lm) or target features per forecast step (regression)."""
    tokens: bool = False
    """Inputs are token ids (the model gets an embedding layer)."""
    horizon: int = 1
    """Regression: forecast steps per example."""
    pipeline: dict[str, Any] = field(default_factory=dict)
    """JSON-ready state that rebuilds the data pipeline at eval time (vocabulary, scaler, labels)."""
    target_columns: list[int] | None = None
    """Regression: the input feature each target column is (a series' own past), so the naive
    repeat-last forecast can be made; None when the targets are not among the inputs."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "input_size": self.input_size,
            "output_size": self.output_size,
            "tokens": self.tokens,
            "horizon": self.horizon,
            "pipeline": self.pipeline,
        } | ({"target_columns": self.target_columns} if self.target_columns is not None else {})

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "DataSpec":
        return cls(**raw)


class Batch(NamedTuple):
    inputs: torch.Tensor  # (batch, time, features) float, or (batch, time) token ids
    targets: torch.Tensor  # tagging (batch, time); classification (batch,); regression (batch, horizon, out)
    lengths: torch.Tensor | None  # (batch,) valid steps of padded sequences, on the CPU


@dataclass(frozen=True)
class Split:
    """One split held as whole tensors; batches are slices by index, never per-sample Python."""

    inputs: torch.Tensor
    targets: torch.Tensor
    lengths: torch.Tensor | None = None
    stateful: bool = False
    """Consecutive batches continue the same sequences (carry the hidden state across them)."""
    unscale: tuple[torch.Tensor, torch.Tensor] | None = None
    """Regression on scaled data: per-target (offset, scale), so `targets * scale + offset` is in
    the file's units (evaluate adds `*_orig` metrics)."""
    unit: ClassVar[str] = "sequences"
    """What one item of `len(split)` is, for people: sequences, windows or tokens."""

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def to(self, device: torch.device) -> "Split":
        """Move the tensors once; lengths stay on the CPU, as pack_padded_sequence wants."""
        return replace(self, inputs=self.inputs.to(device), targets=self.targets.to(device))

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Batches in order, or shuffled when a generator is given."""
        count = len(self)
        if generator is None:
            for start in range(0, count, batch_size):
                stop = start + batch_size
                lengths = None if self.lengths is None else self.lengths[start:stop]
                yield Batch(self.inputs[start:stop], self.targets[start:stop], lengths)
            return
        order = torch.randperm(count, generator=generator)
        device_order = order.to(self.inputs.device)
        for start in range(0, count, batch_size):
            index = device_order[start : start + batch_size]
            lengths = None if self.lengths is None else self.lengths[order[start : start + batch_size]]
            yield Batch(self.inputs[index], self.targets[index], lengths)

    def hold_out(self, fraction: float, generator: torch.Generator) -> tuple["Split", "Split"]:
        """(the rest, a held-out part): `fraction` of the sequences, drawn by `generator`, never
        trained on (`l2.adapt`'s hyper-loss); the rest keeps its order."""
        count = len(self)
        held = min(max(round(fraction * count), 1), count - 1)
        if count < 2:
            raise DataError(f"l2.adapt.holdout_fraction: the training split has {count} sequence; nothing to hold out")
        order = torch.randperm(count, generator=generator)
        rest_index, held_index = order[held:].sort().values, order[:held]

        def part(index: torch.Tensor) -> Split:
            lengths = None if self.lengths is None else self.lengths[index]
            device_index = index.to(self.inputs.device)
            return Split(self.inputs[device_index], self.targets[device_index], lengths, unscale=self.unscale)

        return part(rest_index), part(held_index)


@dataclass(frozen=True)
class Splits:
    train: Split
    val: Split
    test: Split
    spec: DataSpec
    rows: dict[str, Any] | None = None
    """Row-split data: the rows each split's targets come from, and the rule that chose them."""

    def counts(self) -> dict[str, Any]:
        """What the run sees: items per split (and their unit), plus the rows behind them."""
        seen = {"unit": self.train.unit, **{name: len(self.get(name)) for name in ("train", "val", "test")}}
        return seen | ({"rows": self.rows} if self.rows else {})

    def get(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise DataError(f"unknown split {name!r}; choose train, val or test")
        return getattr(self, name)


BUILDERS: dict[str, Callable[[Any], Splits]] = {}


def register(kind: str) -> Callable[[Callable[[Any], Splits]], Callable[[Any], Splits]]:
    """Register the function that builds the splits of one `data.kind`."""

    def wrap(builder: Callable[[Any], Splits]) -> Callable[[Any], Splits]:
        BUILDERS[kind] = builder
        return builder

    return wrap


# kind → function(data_cfg, spec, path) that reads a new file through the saved pipeline
# (vocabulary, label map, scaler in `spec.pipeline`), for `eval --data` and `predict`.
LOADERS: dict[str, Callable[[Any, DataSpec, Path], Split]] = {}


def register_loader(kind: str) -> Callable[[Callable[..., Split]], Callable[..., Split]]:
    """Register how one file-based `data.kind` reads a new file with a trained pipeline."""

    def wrap(loader: Callable[..., Split]) -> Callable[..., Split]:
        LOADERS[kind] = loader
        return loader

    return wrap


def load_new_data(data_cfg: Any, spec: DataSpec, path: Path) -> Split:
    """A split read from `path` exactly as the training data was prepared."""
    import_kind(data_cfg.kind)
    if data_cfg.kind not in LOADERS:
        raise DataError(f"--data: data kind {data_cfg.kind!r} is generated, not read from files")
    split = LOADERS[data_cfg.kind](data_cfg, spec, Path(path))
    if len(split) == 0:
        raise DataError(f"{path}: no examples")
    return split


def build_splits(data_cfg: Any) -> Splits:
    """Build train/val/test for the config's `kind`; empty splits are an error."""
    import_kind(data_cfg.kind)
    splits = BUILDERS[data_cfg.kind](data_cfg)
    for name in ("train", "val", "test"):
        if len(splits.get(name)) == 0:
            raise DataError(f"data ({data_cfg.kind}): the {name} split is empty")
    return splits


# Modules that register the file-based kinds, imported on first use of their kind, so a run
# on built-in data never pays for pandas (≈ 0.3 s of start-up).
KIND_MODULES = {
    "text_lm": "text",
    "text_classification": "text_classification",
    "timeseries_forecast": "series",
    "sequence_classification": "ucr",
}


def import_kind(kind: str) -> None:
    """Import the module that registers `kind`, if it is a file-based kind not yet loaded."""
    if kind in KIND_MODULES and kind not in BUILDERS:
        importlib.import_module(f"{__package__}.{KIND_MODULES[kind]}")
