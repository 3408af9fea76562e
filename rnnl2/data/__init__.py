"""Datasets as in-memory tensors: `Split` batches them by index, `build_splits` picks the
builder for `data.kind`, and `DataSpec` tells the model and eval what the data looks like.
The core lives in `base`; each kind's module registers itself there."""

from __future__ import annotations

from ..errors import DataError
from .base import (
    BUILDERS,
    Batch,
    DataSpec,
    KIND_MODULES,
    LOADERS,
    Split,
    Splits,
    Task,
    build_splits,
    check_file,
    check_header,
    import_kind,
    load_new_data,
    register,
    register_loader,
)
from . import synthetic  # noqa: E402,F401  (registers the built-in kinds)

__all__ = [
    "DataError",
    "BUILDERS",
    "Batch",
    "DataSpec",
    "KIND_MODULES",
    "LOADERS",
    "Split",
    "Splits",
    "Task",
    "build_splits",
    "check_file",
    "check_header",
    "import_kind",
    "load_new_data",
    "register",
    "register_loader",
]
