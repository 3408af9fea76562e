"""Checkpoints: written atomically with torch.save, loaded with `weights_only=True` after a CRC
check of every archive member, so a crafted file cannot run code and a damaged one is a clear
error, never silently wrong weights. torch is imported inside the functions: readers of run
folders (compare, report, tune) never load it."""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

from .errors import Rnnl2Error
from .runs import atomic_write

CHECKPOINT_FORMAT = "rnnl2-checkpoint-v1"
# What torch.load raises on a refused pickle, a truncated zip or garbage bytes.
LOAD_ERRORS = (
    pickle.UnpicklingError,
    RuntimeError,
    EOFError,
    ValueError,
    zipfile.BadZipFile,
    OSError,
    KeyError,
    AttributeError,
    IndexError,
    TypeError,
    struct.error,
)  # the last three: text or random bytes


class CheckpointError(Rnnl2Error):
    """A checkpoint is missing, damaged, unsafe or does not fit the model."""


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save of plain dicts and tensors only, written atomically."""
    import torch  # here, not at the top: compare and report read run folders without torch

    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **payload}, buffer)
    atomic_write(path, lambda handle: handle.write(buffer.getbuffer()), binary=True)


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint file, or a run folder meaning its best (else last) checkpoint."""
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            candidate = path / "checkpoints" / name
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{path}: no checkpoints/best.pt or checkpoints/last.pt in this folder")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint or run folder")
    return path


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load with weights_only=True, so a crafted file cannot run code; damage is a clear error."""
    import torch

    verify_archive(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except LOAD_ERRORS as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: not a loadable rnnl2 checkpoint (unsafe, truncated or corrupt): {first}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an rnnl2 checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    return payload


def verify_archive(path: Path) -> None:
    """Check every member of the checkpoint's zip archive against its stored CRC-32: torch.load
    does not, so flipped bytes in a tensor would load as silently wrong weights."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: damaged checkpoint, not a readable archive ({err})") from None
    if bad is not None:
        raise CheckpointError(
            f"{path}: damaged checkpoint: {bad} fails its CRC check (the file was changed or "
            "corrupted after it was written)"
        )
