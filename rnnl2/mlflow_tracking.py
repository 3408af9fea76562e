"""MLflow, as its users expect it: a run per rnnl2 run, and a sweep or tune as one parent run with
its runs nested under it, all in the experiment of the config's `name`. Every epoch's metrics,
the flattened config as params, summary.json and config.yaml as artifacts; the parent gets the
search definition, trials.csv, best.yaml and selection.json. The default store is
`sqlite:///mlruns.db` in the working directory (MLflow 3 deprecates the file store and refuses it
unless MLFLOW_ALLOW_FILE_STORE is set), which `mlflow ui --backend-store-uri sqlite:///mlruns.db`
browses. Everything goes through MlflowClient (no global active run, so warm workers that train
many runs in one process never mix them up); mlflow is imported only when a run asks for it."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from .compare import flatten
from .config import RunConfig, to_plain_dict
from .errors import Rnnl2Error
from .runs import write_json
from .status import RunStatus

MLFLOW_FILE = "mlflow.json"
"""In a run, sweep or tune folder: which MLflow run mirrors it, so a resume continues the same one."""
MLFLOW_STATUS = {
    RunStatus.DIVERGED: "FAILED",
    RunStatus.FAILED: "FAILED",
    RunStatus.INTERRUPTED: "KILLED",
}
"""rnnl2 status → MLflow run status (finished ones: FINISHED; paused: SCHEDULED, it goes on later)."""
PARENT_FILES = ("sweep.json", "tune.json", "trials.csv", "best.yaml", "selection.json")
"""What a sweep's or tune's parent run carries as artifacts (with figures/, when there is one)."""


def hparams(cfg: RunConfig) -> dict[str, Any]:
    """The resolved config flattened to dotted keys, every value a number, bool or text."""
    plain = flatten(to_plain_dict(cfg))
    return {
        key: value if isinstance(value, (bool, int, float, str)) else json.dumps(value) for key, value in plain.items()
    }


def check_mlflow(enabled: bool) -> None:
    """Before a run folder exists: `output.mlflow` needs the mlflow package."""
    if enabled and importlib.util.find_spec("mlflow") is None:
        raise Rnnl2Error("output.mlflow: true needs MLflow; pip install 'rnnl2[mlflow]'")


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else `sqlite:///<working directory>/mlruns.db`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlruns.db'}"


def client_for(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):  # the store's first-use INFO lines would land in every run log
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient(uri)


def read_record(folder: Path) -> dict[str, Any] | None:
    path = folder / MLFLOW_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def experiment_id(client: Any, name: str) -> str:
    """The experiment's id, created if new (a parallel run may create it first)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        return client.get_experiment_by_name(name).experiment_id


def log_params(client: Any, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(key, str(value)[:6000]) for key, value in params.items()]
    for start in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
        client.log_batch(run_id, params=items[start : start + 100])


class MLflowMirror:
    """The MLflow run of one rnnl2 run: nested under its sweep's or tune's parent run when the
    folder above holds one (`open_parent`)."""

    def __init__(self, run_dir: Path, cfg: RunConfig):
        check_mlflow(True)
        self.files = run_dir
        record = read_record(run_dir)
        self.client = client_for(record["tracking_uri"] if record else tracking_uri())
        if record:  # a resumed run continues its MLflow run
            self.run_id = record["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        parent = read_record(run_dir.parent)
        tags = {"rnnl2.run_dir": str(run_dir)}
        if parent and parent.get("tracking_uri") == self.client.tracking_uri:
            experiment = parent["experiment_id"]
            tags["mlflow.parentRunId"] = parent["run_id"]
        else:
            experiment = experiment_id(self.client, cfg.name)
        run = self.client.create_run(experiment, run_name=run_dir.name, tags=tags)
        self.run_id = run.info.run_id
        log_params(self.client, self.run_id, hparams(cfg))
        write_json(
            run_dir / MLFLOW_FILE,
            {"tracking_uri": self.client.tracking_uri, "experiment_id": experiment, "run_id": self.run_id},
        )

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[start : start + 1000])

    def log_epoch(self, row: dict[str, Any]) -> None:
        numbers = {
            k: v for k, v in row.items() if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self.log_metrics(numbers, step=row["epoch"])

    def finish(self, summary: dict[str, Any], metrics: dict[str, float]) -> None:
        """The summary's numbers, summary.json and config.yaml as artifacts, and the run's status."""
        self.log_metrics(metrics, step=summary.get("epochs_run") or 0)
        for name in ("summary.json", "config.yaml"):
            if (self.files / name).is_file():
                self.client.log_artifact(self.run_id, str(self.files / name))
        self.client.set_tag(self.run_id, "rnnl2.status", summary["status"])
        if summary["status"] == RunStatus.PAUSED:  # a tune trial at its rung: it goes on later
            self.client.update_run(self.run_id, status="SCHEDULED")
        else:
            self.client.set_terminated(self.run_id, status=MLFLOW_STATUS.get(summary["status"], "FINISHED"))


def open_parent(folder: Path, experiment: str, kind: str, params: dict[str, Any]) -> None:
    """The parent run of a sweep or tune folder (created once, RUNNING again on a rerun); the
    runs trained in the folder nest under it. `params`: the search's definition."""
    record = read_record(folder)
    client = client_for(record["tracking_uri"] if record else tracking_uri())
    if record:
        client.update_run(record["run_id"], status="RUNNING")
        return
    experiment_number = experiment_id(client, experiment)
    tags = {"rnnl2.kind": kind, "rnnl2.folder": str(folder)}
    run = client.create_run(experiment_number, run_name=folder.name, tags=tags)
    log_params(client, run.info.run_id, params)
    record = {"tracking_uri": client.tracking_uri, "experiment_id": experiment_number, "run_id": run.info.run_id}
    write_json(folder / MLFLOW_FILE, record)


@contextlib.contextmanager
def parent_run(folder: Path, cfg: RunConfig, kind: str, params: dict[str, Any]) -> Iterator[Callable[[str], None]]:
    """With `output.mlflow`, the folder's parent run around a sweep's or tune's work: closed
    FINISHED, KILLED when Ctrl-C or SIGTERM stopped it (call the yielded function with
    `interrupted` when the driver caught that itself), FAILED when the driver crashed."""
    if not cfg.output.mlflow:
        yield lambda status: None
        return
    check_mlflow(True)
    open_parent(folder, cfg.name, kind, params)
    ended = {"status": "completed"}
    try:
        yield lambda status: ended.update(status=status)
    except KeyboardInterrupt:
        close_parent(folder, "interrupted")
        raise
    except BaseException:
        close_parent(folder, "failed")
        raise
    close_parent(folder, ended["status"])


def log_parent_files(folder: Path) -> None:
    """The parent run's artifacts as the folder has them now (`sweep --select` writes best.yaml
    after the runs); nothing when the folder has no parent run."""
    record = read_record(folder)
    if record is None:
        return
    client = client_for(record["tracking_uri"])
    for name in PARENT_FILES:
        if (folder / name).is_file():
            client.log_artifact(record["run_id"], str(folder / name))
    if (folder / "figures").is_dir():
        client.log_artifacts(record["run_id"], str(folder / "figures"), artifact_path="figures")


def close_parent(folder: Path, status: str) -> None:
    """Its files as artifacts (`log_parent_files`) and how it ended: completed (FINISHED),
    interrupted (KILLED) or failed (FAILED, a driver crash)."""
    record = read_record(folder)
    if record is None:
        return
    log_parent_files(folder)
    client = client_for(record["tracking_uri"])
    client.set_tag(record["run_id"], "rnnl2.status", status)
    mlflow_status = {"completed": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
    client.set_terminated(record["run_id"], status=mlflow_status)


def tag_trial(run_dir: Path, tags: dict[str, Any], pruned: bool = False) -> None:
    """A tune's decision on one trial, on its MLflow run when it has one: its rung, and for a
    trial stopped there `rnnl2.status = pruned` with the run FINISHED (MLflow has no pruned
    status; KILLED would read as a crash)."""
    record = read_record(run_dir)
    if record is None:
        return
    client = client_for(record["tracking_uri"])
    for key, value in tags.items():
        client.set_tag(record["run_id"], key, str(value))
    if pruned:
        client.set_tag(record["run_id"], "rnnl2.status", "pruned")
        client.set_terminated(record["run_id"], status="FINISHED")
