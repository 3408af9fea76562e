"""MLflow as its users see it, read back through MLflow's own API: a run (params, per-epoch
metrics, artifacts, SCHEDULED while paused, a resume continuing it), a sweep and a tune as a
parent run with nested children (pruned trials FINISHED with `rnnl2.status = pruned`, best.yaml
on the parent), a driver crash closing the parent FAILED, the default sqlite store in the
working directory, and a live `mlflow server` on 127.0.0.1 taking a run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import TINY_TAGGING, write_config
from rnnl2.cli import app

pytestmark = pytest.mark.usefixtures("single_thread")


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_a_run_is_mirrored_in_mlflow_and_a_resume_continues_it(tmp_path, mlflow_store):
    config = write_config(tmp_path, TINY_TAGGING | {"train": {"epochs": 3, "batch_size": 16}})
    run_dir = tmp_path / "run"
    paused = invoke("train", config, "--set", "output.mlflow=true", "--run-dir", run_dir, "--pause-after", "1", "-q")
    assert paused.exit_code == 0, paused.output
    record = json.loads((run_dir / "mlflow.json").read_text())
    assert mlflow_store.get_experiment(record["experiment_id"]).name == "tiny"
    assert mlflow_store.get_run(record["run_id"]).info.status == "SCHEDULED"  # paused: it goes on later
    resumed = invoke("train", "--resume", run_dir, "-q")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((run_dir / "mlflow.json").read_text())["run_id"] == record["run_id"]
    run = mlflow_store.get_run(record["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["rnnl2.status"] == "completed"
    assert run.data.params["l2.lambda"] == "0.001" and run.data.params["model.cell"] == "lstm"
    history = mlflow_store.get_metric_history(record["run_id"], "val_loss")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sorted((m.step, m.value) for m in history) == [(r["epoch"], r["val_loss"]) for r in rows]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert run.data.metrics["test_loss"] == pytest.approx(summary["test_loss"])
    assert run.data.metrics["baselines.unigram.test_loss"] == pytest.approx(
        summary["baselines"]["unigram"]["test_loss"]
    )
    assert sorted(a.path for a in mlflow_store.list_artifacts(record["run_id"])) == ["config.yaml", "summary.json"]


def test_a_sweep_is_one_parent_run_with_its_runs_nested(tmp_path, mlflow_store):
    import mlflow

    config = write_config(tmp_path, TINY_TAGGING | {"train": {"epochs": 1, "batch_size": 16}})
    args = ["sweep", config, "--grid", "l2.lambda=0,1e-3", "--set", "output.mlflow=true", "--select", "val_loss"]
    result = invoke(*args, "--runs-dir", tmp_path / "runs", "-q")
    assert result.exit_code == 0, result.output
    sweep_dir = Path(result.stdout.strip().splitlines()[-1])
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["tiny"])
    parents = runs[runs["tags.rnnl2.kind"] == "sweep"]
    assert len(parents) == 1 and parents.iloc[0]["tags.mlflow.runName"] == sweep_dir.name
    parent = parents.iloc[0]["run_id"]
    children = runs[runs["tags.mlflow.parentRunId"] == parent]
    assert sorted(children["params.l2.lambda"]) == ["0.0", "0.001"] and set(children["status"]) == {"FINISHED"}
    assert parents.iloc[0]["status"] == "FINISHED"
    artifacts = {a.path for a in mlflow_store.list_artifacts(parent)}
    assert {"sweep.json", "best.yaml", "selection.json"} <= artifacts


def test_a_tune_nests_its_trials_and_shows_pruned_ones_as_pruned(tmp_path, mlflow_store):
    config = write_config(tmp_path, TINY_TAGGING | {"train": {"epochs": 2, "batch_size": 16}})
    args = ["tune", config, "--space", "l2.lambda=0|loguniform(1e-5,1e-1)", "--trials", "3", "--eta", "3"]
    args += ["--min-epochs", "1", "--set", "output.mlflow=true", "--tune-dir", tmp_path / "T", "-q"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    parent = json.loads((tmp_path / "T" / "mlflow.json").read_text())["run_id"]
    assert mlflow_store.get_run(parent).data.tags["rnnl2.kind"] == "tune"
    children = mlflow_store.search_runs(
        [mlflow_store.get_experiment_by_name("tiny").experiment_id], f"tags.mlflow.parentRunId = '{parent}'"
    )
    trials = json.loads((tmp_path / "T" / "trials.json").read_text())["trials"]
    by_name = {r.info.run_name: r for r in children}
    assert sorted(by_name) == sorted(t["name"] for t in trials)
    for trial in trials:
        run = by_name[trial["name"]]
        assert run.info.status == "FINISHED"
        expected = "pruned" if trial["state"] == "stopped" else "completed"
        assert run.data.tags["rnnl2.status"] == expected and run.data.tags["rnnl2.rung"] == str(trial["rung"])
    assert sum(t["state"] == "stopped" for t in trials) == 2
    assert {"best.yaml", "trials.csv", "tune.json"} <= {a.path for a in mlflow_store.list_artifacts(parent)}
    assert mlflow_store.get_run(parent).info.status == "FINISHED"


def test_a_driver_crash_closes_the_parent_run_failed(tmp_path, mlflow_store, monkeypatch):
    import rnnl2.search.tune
    from rnnl2.launch import Launch
    from rnnl2.search.tune_plan import TuneSpec, plan_tune

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the driver")

    monkeypatch.setattr(rnnl2.search.tune, "select_best", broken)
    config = write_config(tmp_path, TINY_TAGGING | {"train": {"epochs": 1, "batch_size": 16}})
    spec = TuneSpec(config, ["l2.lambda=loguniform(1e-5,1e-1)"], trials=1, fixed=["output.mlflow=true"])
    plan = plan_tune(spec, tune_dir=tmp_path / "T")
    with pytest.raises(RuntimeError, match="a bug"):
        rnnl2.search.tune.run_tune(plan, Launch(jobs=1, threads=1))
    parent = mlflow_store.get_run(json.loads((tmp_path / "T" / "mlflow.json").read_text())["run_id"])
    assert parent.info.status == "FAILED" and parent.data.tags["rnnl2.status"] == "failed"


def test_the_default_store_is_sqlite_in_the_working_directory(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, TINY_TAGGING | {"train": {"epochs": 1, "batch_size": 16}})
    result = invoke("train", config, "--set", "output.mlflow=true", "--run-dir", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.output
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")  # what `mlflow ui --backend-store-uri` opens
    run = client.get_run(json.loads((tmp_path / "run" / "mlflow.json").read_text())["run_id"])
    assert run.info.status == "FINISHED" and not (tmp_path / "mlruns" / "0" / "meta.yaml").exists()


def test_mlflow_missing_exits_2_with_the_pip_command_before_any_folder(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    config = write_config(tmp_path, TINY_TAGGING)
    result = invoke("train", config, "--set", "output.mlflow=true", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "pip install 'rnnl2[mlflow]'" in result.output
    assert not (tmp_path / "runs").exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_run_logs_to_a_live_mlflow_server(tmp_path, monkeypatch):
    pytest.importorskip("flask")  # the full mlflow: its server
    from mlflow.tracking import MlflowClient

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1",
        ],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, server.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "mlflow server did not answer /health"
            time.sleep(0.5)
        uri = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        config = write_config(tmp_path, TINY_TAGGING | {"train": {"epochs": 1, "batch_size": 16}})
        result = invoke("train", config, "--set", "output.mlflow=true", "--run-dir", tmp_path / "run", "-q")
        assert result.exit_code == 0, result.output
        client = MlflowClient(uri)
        run = client.get_run(json.loads((tmp_path / "run" / "mlflow.json").read_text())["run_id"])
        assert run.info.status == "FINISHED" and "test_loss" in run.data.metrics
        assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == ["config.yaml", "summary.json"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.communicate(timeout=30)
