"""Mirrors of a run in the trackers people already use: an MLflow run (`output.mlflow`: the
flattened config as params, every epoch's metrics, summary.json and config.yaml as artifacts)
and TensorBoard's HParams (`output.tensorboard`). MLflow is imported only when a run asks for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .compare import summary_numbers
from .config import RunConfig
from .errors import Rnnl2Error
from .runs import MetricsLog, open_metrics_log
from .mlflow_tracking import MLFLOW_FILE, MLflowMirror, hparams
from .status import ENDED, FINISHED

ALWAYS_HPARAMS = ("l2.lambda", "l2.mode")
"""TensorBoard HParams columns every run of a sweep or tune keeps, varying or not."""


def varying_keys(run_dir: Path) -> set[str] | None:
    """The keys a run's sweep or tune varies (grid axes, `runs` entries and seed; the tune's
    spaces), read from the definition in the folder above; None for a run of its own."""
    from .runs import read_json

    parent = run_dir.parent
    try:
        if (parent / "sweep.json").is_file():
            sweep = read_json(parent / "sweep.json")
            keys = {k for k, _ in sweep.get("grid") or []} | {k for v in sweep.get("runs") or [] for k in v}
            return keys | ({"seed"} if sweep.get("seeds") else set())
        if (parent / "tune.json").is_file():
            return {text.partition("=")[0] for text in read_json(parent / "tune.json").get("spaces") or []}
    except (Rnnl2Error, AttributeError, TypeError, ValueError):  # a damaged definition: all keys
        return None
    return None


def tensorboard_hparams(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """What TensorBoard's HParams table shows: for a run of a sweep or tune, the keys it varies
    plus λ and the L2 mode (not ~50 config keys that are the same in every row); else all."""
    every = hparams(cfg)
    keys = varying_keys(run_dir)
    if keys is None:
        return every
    return {k: v for k, v in every.items() if k in keys or k in ALWAYS_HPARAMS}


def final_metrics(summary: dict[str, Any], logged: set[str]) -> dict[str, float]:
    """The summary's numbers; those that are also per-epoch metric names get a `best.` prefix."""
    numbers = summary_numbers({k: v for k, v in summary.items() if k not in ("versions", "resumed_from")})
    return {(f"best.{key}" if key in logged else key): float(value) for key, value in numbers.items()}


class TrackedLog:
    """The run's metrics log (files, TensorBoard) plus the trackers; `finish` after each summary."""

    def __init__(self, log: MetricsLog, run_dir: Path, cfg: RunConfig):
        self.log, self.run_dir, self.cfg = log, run_dir, cfg
        self.mlflow = MLflowMirror(run_dir, cfg) if cfg.output.mlflow else None
        self.logged: set[str] = set()

    def append(self, row: dict[str, Any]) -> None:
        self.log.append(row)
        self.logged |= set(row)
        if self.mlflow is not None:
            self.mlflow.log_epoch(row)

    def rewrite(self, rows: list[dict[str, Any]]) -> None:
        self.log.rewrite(rows)
        self.logged |= {k for row in rows for k in row}

    def finish(self, summary: dict[str, Any]) -> None:
        """Status, final numbers and files to the trackers; an HParams session with its status
        once the run has ended (finished, diverged or failed: a paused or interrupted run goes on
        later, and TensorBoard reads one session per run; a pruned trial gets its own from the
        tune, `close_pruned`)."""
        writer = getattr(self.log, "writer", None)
        if writer is not None and summary["status"] in ENDED:
            add_hparams_session(writer, self.cfg, self.run_dir, summary, summary["status"])
            writer.flush()
        if self.mlflow is not None:
            self.mlflow.finish(summary, final_metrics(summary, self.logged))


"""The statuses after which a run is not continued: its HParams session is written then."""


def add_hparams_session(writer: Any, cfg: RunConfig, run_dir: Path, summary: dict[str, Any], status: str) -> None:
    """One HParams row: the hparams `tensorboard_hparams` picks, the status, the final numbers."""
    metrics = {f"final/{k}": v for k, v in final_metrics(summary, set()).items() if "." not in k}
    writer.add_hparams(tensorboard_hparams(cfg, run_dir) | {"status": status}, metrics, run_name=".")


def close_pruned(run_dir: Path) -> None:
    """A tune trial stopped at its rung: its folder stays paused (resumable), and with
    `output.tensorboard` its HParams session says `pruned`, so the view shows every trial."""
    from .config import load_config
    from .runs import read_summary

    cfg = load_config(run_dir / "config.yaml")
    if not cfg.output.tensorboard:
        return
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
    add_hparams_session(writer, cfg, run_dir, read_summary(run_dir) or {}, "pruned")
    writer.close()


def open_run_log(run_dir: Path, cfg: RunConfig) -> TrackedLog:
    return TrackedLog(open_metrics_log(run_dir, cfg.output.tensorboard), run_dir, cfg)


def mirror_finished(run_dir: Path, cfg: RunConfig) -> bool:
    """Log a finished run folder to the trackers `cfg` asks for and it has not been logged to
    (no mlflow.json; no tensorboard/), from its metrics.jsonl and summary.json, as if it had
    been tracked while it trained. Returns whether anything was logged."""
    from .runs import read_metrics, read_summary

    summary = read_summary(run_dir) or {}
    wants_mlflow = cfg.output.mlflow and not (run_dir / MLFLOW_FILE).is_file()
    wants_tensorboard = cfg.output.tensorboard and not (run_dir / "tensorboard").exists()
    if summary.get("status") not in FINISHED or not (wants_mlflow or wants_tensorboard):
        return False
    rows = read_metrics(run_dir)
    if wants_tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        for row in rows:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(key, value, row["epoch"])
        add_hparams_session(writer, cfg, run_dir, summary, summary["status"])
        writer.close()
    if wants_mlflow:
        mirror = MLflowMirror(run_dir, cfg)
        for row in rows:
            mirror.log_epoch(row)
        mirror.finish(summary, final_metrics(summary, {k for row in rows for k in row}))
    return True
