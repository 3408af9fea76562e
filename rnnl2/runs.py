"""The run folder: its unique name, `config.yaml`, `metrics.jsonl`/`metrics.csv`, `summary.json`,
and checkpoints that load with `torch.load(weights_only=True)`. Every write is atomic."""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import secrets
import struct
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import yaml

from .config import RunConfig, to_plain_dict
from .errors import Rnnl2Error, Rnnl2Warning

CHECKPOINT_FORMAT = "rnnl2-checkpoint-v1"
# What torch.load raises on a refused pickle, a truncated zip or garbage bytes.
LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError, KeyError,
               AttributeError, IndexError, TypeError, struct.error)  # the last three: text or random bytes


class CheckpointError(Rnnl2Error):
    """A checkpoint is missing, damaged, unsafe or does not fit the model."""


def atomic_write(path: Path, write: Callable[[Any], None], binary: bool = False) -> None:
    """Write through a temp file in the same folder, fsync, rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def create_run_dir(runs_dir: Path, name: str, explicit: Path | None = None) -> Path:
    """`runs/<name>/<YYYYmmdd-HHMMSS>-<6 hex>/`, created exclusively so no two runs share one."""
    if explicit is not None:
        if explicit.exists() and any(explicit.iterdir()):
            raise Rnnl2Error(f"--run-dir {explicit} exists and is not empty; choose a new folder")
        explicit.mkdir(parents=True, exist_ok=True)
        return explicit
    parent = runs_dir / name
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    while True:
        run_dir = parent / f"{stamp}-{secrets.token_hex(3)}"
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue


def check_writable(folder: Path) -> None:
    """Fail before training when the runs folder cannot be written: not a folder, no permission,
    or a read-only file system (a real file is created and removed, so this holds for root too)."""
    probe = Path(folder).absolute()
    while not probe.exists() and not probe.is_symlink():
        probe = probe.parent
    if not probe.is_dir():
        raise Rnnl2Error(f"cannot write run folders under {folder}: {probe} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise Rnnl2Error(f"cannot write run folders under {folder}: {probe} is not writable ({err.strerror})") from None


def write_config(run_dir: Path, cfg: RunConfig) -> None:
    """The resolved config, so `rnnl2 train <run>/config.yaml` repeats the run."""
    write_text(run_dir / "config.yaml", yaml.safe_dump(to_plain_dict(cfg), sort_keys=False))


class MetricsLog:
    """Appends one row per epoch to `metrics.jsonl` and `metrics.csv` (same names in both)."""

    def __init__(self, run_dir: Path):
        self.jsonl = run_dir / "metrics.jsonl"
        self.csv = run_dir / "metrics.csv"
        self.columns: list[str] | None = None

    def append(self, row: dict[str, Any]) -> None:
        with self.jsonl.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        new_file = self.columns is None
        self.columns = self.columns or list(row)
        with self.csv.open("a", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)

    def rewrite(self, rows: list[dict[str, Any]]) -> None:
        """Replace both files with `rows` (a resumed run drops rows written after its checkpoint)."""
        write_text(self.jsonl, "".join(json.dumps(row) + "\n" for row in rows))
        self.columns = list(rows[0]) if rows else None
        table = io.StringIO()
        if rows:
            writer = csv.DictWriter(table, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        write_text(self.csv, table.getvalue())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file a run or sweep wrote. A torn last line (a full disk or a kill
    cut the write) is skipped with a warning; damage anywhere else makes the file unreadable."""
    try:
        lines = path.read_text(encoding="utf-8", errors="strict").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise Rnnl2Error(f"{path}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
    rows: list[dict[str, Any]] = []
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    for position, (number, line) in enumerate(numbered):
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            if position == len(numbered) - 1:
                warnings.warn(f"{path}: line {number} is cut short (a write was interrupted); skipped it", Rnnl2Warning, stacklevel=2)
                break
            raise Rnnl2Error(f"{path}: line {number} is not a JSON object; the file is damaged") from None
        rows.append(row)
    return rows


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file (summary.json, eval-*.json); damage is an Rnnl2Error naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise Rnnl2Error(f"{path}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
    if not isinstance(data, dict):
        raise Rnnl2Error(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """A run's summary.json, or None when it is missing or damaged (a run that did not finish)."""
    try:
        return read_json(run_dir / "summary.json")
    except Rnnl2Error:
        return None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return read_jsonl(path)


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


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with weights_only=True, so a crafted file cannot run code; damage is a clear error."""
    import torch

    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except LOAD_ERRORS as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a loadable rnnl2 checkpoint (unsafe, truncated or corrupt): {first}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an rnnl2 checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    return payload


def check_tensorboard(enabled: bool) -> None:
    """Before a run folder exists: `output.tensorboard` needs the tensorboard package."""
    import importlib.util

    if enabled and importlib.util.find_spec("tensorboard") is None:
        raise Rnnl2Error("output.tensorboard: true needs TensorBoard; pip install 'rnnl2[tensorboard]'")


class TensorBoardLog(MetricsLog):
    """metrics.jsonl/csv plus the same numbers as TensorBoard scalars in <run>/tensorboard/, x = epoch."""

    def __init__(self, run_dir: Path):
        super().__init__(run_dir)
        check_tensorboard(True)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def append(self, row: dict[str, Any]) -> None:
        super().append(row)
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()


def open_metrics_log(run_dir: Path, tensorboard: bool = False) -> MetricsLog:
    return TensorBoardLog(run_dir) if tensorboard else MetricsLog(run_dir)
