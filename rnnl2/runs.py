"""The run folder: its unique name, `config.yaml`, `metrics.jsonl`/`metrics.csv`, `summary.json`,
and checkpoints that load with `torch.load(weights_only=True)`. Every write is atomic."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import secrets
import shutil
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable

import yaml

from .config import RunConfig, to_plain_dict
from .errors import Rnnl2Error, Rnnl2Warning, RunLocked


def file_mode() -> int:
    """The mode an ordinary `open()` gives a new file here (0666 less the umask): every file a run
    writes gets it, the atomically written ones too (mkstemp alone would make them 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = file_mode()


def atomic_write(path: Path, write: Callable[[Any], None], binary: bool = False) -> None:
    """Write through a temp file in the same folder, fsync, rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_write_leftovers(folder: Path, names: tuple[str, ...]) -> None:
    """Delete the temp files `atomic_write` left for `names` in `folder` when its process was
    SIGKILLed mid-write; call it only while holding the folder's lock (no live writer)."""
    for name in names:
        for leftover in folder.glob(f".{name}.*"):
            if leftover.is_file():
                leftover.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def new_stamped_folder(parent: Path) -> Path:
    """A new, empty `parent/<time>-<id>` folder; another id when one by that name was just made."""
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    while True:
        folder = parent / f"{stamp}-{secrets.token_hex(3)}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def create_run_dir(
    runs_dir: Path, name: str, explicit: Path | None = None, run_id: str | None = None
) -> tuple[Path, FolderLock]:
    """`runs/<name>/<YYYYmmdd-HHMMSS>-<6 hex>/` (or exactly `explicit`, which must be new or
    empty), created and locked for this process, with its identity (`run_id`, new if not given)
    in run.json."""
    if explicit is not None:
        if explicit.is_symlink() or (explicit.exists() and not explicit.is_dir()):
            raise Rnnl2Error(f"--run-dir {explicit}: is a file or a link, not a folder")
        if explicit.is_dir():
            check_unlocked(explicit)  # a live writer is named, not reported as "not empty"
            check_empty(explicit)  # before the lock file is made: a refused folder stays as it was
        explicit.mkdir(parents=True, exist_ok=True)
        lock = FolderLock(explicit).acquire()
        try:
            check_empty(explicit)  # another run may have come and gone since the first look
        except Rnnl2Error:
            lock.release()
            raise
        run_dir = explicit
    else:
        run_dir = new_stamped_folder(runs_dir / name)
        lock = FolderLock(run_dir).acquire()
    identity = {"run_id": run_id or new_run_id(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(run_dir / RUN_FILE, identity)
    return run_dir, lock


def check_empty(folder: Path) -> None:
    if any(p.name != FolderLock.NAME for p in folder.iterdir()):
        raise Rnnl2Error(f"--run-dir {folder} exists and is not empty; choose a new folder")


def remove_unstarted(run_dir: Path) -> None:
    """Remove a run folder holding only what is written before training begins (config.yaml,
    run.json, the lock, an `interrupted` summary); anything else in it is left, and so is the folder."""
    for name in ("config.yaml", "summary.json", RUN_FILE, FolderLock.NAME):
        (run_dir / name).unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:  # something else is in it (not ours to delete)
        pass


def remove_failed(run_dir: Path) -> None:
    """Remove the folder of a run that crashed before its first checkpoint: it was made by this
    run (a new folder, or an empty --run-dir) and holds nothing that could be resumed."""
    shutil.rmtree(run_dir, ignore_errors=True)


FAILED_ATTEMPT = re.compile(r"\.failed-\d+$")
"""The name of an attempt a sweep moved aside (`<run>.failed-N/`): kept for its log, never compared."""


def failed_attempt_name(run_name: str, number: int) -> str:
    return f"{run_name}.failed-{number}"


def set_aside(run_dir: Path) -> Path:
    """Move a failed attempt's folder (and its sweep log) to `<run>.failed-N/`, never deleting it."""
    number = 1
    while run_dir.with_name(failed_attempt_name(run_dir.name, number)).exists():
        number += 1
    target = run_dir.with_name(failed_attempt_name(run_dir.name, number))
    run_dir.rename(target)
    log = run_dir.parent / "logs" / f"{run_dir.name}.log"
    if log.is_file():
        log.rename(log.with_name(f"{target.name}.log"))
    return target


RUN_FILE = "run.json"
"""The run's identity: `run_id` is also in every checkpoint, so a checkpoint from another run is refused."""


def new_run_id() -> str:
    return uuid.uuid4().hex


def read_run_id(run_dir: Path) -> str | None:
    """The run id of a folder (None for folders written before run ids existed)."""
    path = run_dir / RUN_FILE
    if not path.exists():
        return None
    run_id = read_json(path).get("run_id")
    if not isinstance(run_id, str):
        raise Rnnl2Error(f"{path}: has no run_id; the file is damaged")
    return run_id


def run_lineage(run_dir: Path) -> list[dict[str, Any]]:
    """The lineage run.json records for a pbt member (`pbt.copy_member`); empty for any other run."""
    path = run_dir / RUN_FILE
    try:
        lineage = read_json(path).get("lineage") if path.is_file() else None
    except Rnnl2Error:
        return []
    return lineage if isinstance(lineage, list) else []


class FolderLock:
    """An exclusive lock on a run or sweep folder, held by the one process that writes it
    (train, resume, a sweep's driver).

    `flock` on `<folder>/.lock`: the kernel drops it when the process dies, so a killed process
    never leaves a stale lock; the file holds the holder's pid for the message a second writer gets.
    `shared`: a reader's lock (`rnnl2 fork` copying a run): any number of readers at once, and
    no writer while one reads."""

    NAME = ".lock"

    def __init__(self, folder: Path, shared: bool = False):
        self.folder, self.shared = folder, shared
        self.handle: Any = None

    def acquire(self) -> FolderLock:
        import fcntl

        handle = open(self.folder / self.NAME, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            # A writer refused: by readers only (forks copying it) when a reader's lock is still free;
            # then the pid in the file is an earlier writer's, not a holder's.
            reading = not self.shared and shared_lock_free(handle)
            handle.seek(0)
            holder = handle.read()
            handle.close()
            raise locked(self.folder, holder, reading) from None
        if self.shared:  # the pid in the file stays the last writer's
            self.handle = handle
            return self
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.handle = handle
        return self

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # closing the file drops the flock
            self.handle = None

    def __enter__(self) -> FolderLock:
        return self if self.handle is not None else self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


NOT_COPIED = (FolderLock.NAME, "mlflow.json", "tensorboard")
"""What a copy of a run folder (a fork, a PBT member's weight copy) leaves behind: the source's
lock and its tracking runs."""


def shared_lock_free(handle: Any) -> bool:
    """Whether a reader's lock on this open lock file can be taken now (taken and dropped at once)."""
    import fcntl

    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(handle, fcntl.LOCK_UN)
    return True


def locked(folder: Path, holder: str, reading: bool = False) -> RunLocked:
    if reading:
        return RunLocked(f"{folder} is being copied by `rnnl2 fork` in another process; wait for it to finish")
    return RunLocked(
        f"{folder} is being written by another rnnl2 process (pid {holder.strip() or 'unknown'}); "
        "wait for it to finish or stop it first"
    )


def check_unlocked(folder: Path) -> None:
    """Raise RunLocked when a live process holds the folder's lock (no lock file is made)."""
    import fcntl

    path = folder / FolderLock.NAME
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise locked(folder, handle.read()) from None


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
            writer = csv.DictWriter(table, fieldnames=list(rows[0]), extrasaction="ignore")
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
                warnings.warn(
                    f"{path}: line {number} is cut short (a write was interrupted); skipped it",
                    Rnnl2Warning,
                    stacklevel=2,
                )
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


def record_eval(checkpoint: Path, split: str, result: dict[str, Any]) -> Path | None:
    """`eval-<split>.json` beside the checkpoints of the run it came from; a folder that cannot
    be written (read-only) costs the record, with a warning, never the printed result."""
    if checkpoint.parent.name != "checkpoints":
        return None
    path = checkpoint.parent.parent / f"eval-{split}.json"
    try:
        write_json(path, result)
    except OSError as err:
        warnings.warn(
            f"could not save {path} ({err.strerror or err}); the result is printed only", Rnnl2Warning, stacklevel=2
        )
        return None
    return path


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
