"""tracking: TensorBoard's HParams (every ended run and every pruned trial, with its status) and
tracking turned on for a finished sweep logging it without retraining. MLflow's own tests are in
test_mlflow_tracking.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from helpers import TINY_TAGGING, write_config
from rnnl2.cli import app

pytestmark = pytest.mark.usefixtures("single_thread")


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_training_imports_no_mlflow_unless_asked():
    code = "import sys, rnnl2.cli, rnnl2.train; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tensorboard_hparams_line_up_the_config_and_final_metrics(tiny_config, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    result = invoke("train", tiny_config, "--set", "output.tensorboard=true", "--run-dir", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = session.session_start_info.hparams
    assert values["l2.lambda"].number_value == pytest.approx(1e-3) and values["seed"].number_value == 0
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {"final/test_loss", "final/val_loss"} <= {m.name.tag for m in experiment.metric_infos}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert events.Scalars("final/test_loss")[0].value == pytest.approx(summary["test_loss"])


def test_tracking_turned_on_for_a_finished_sweep_logs_it_without_retraining(tmp_path, mlflow_store):
    """output.* is not part of a run's identity: the same sweep with MLflow and TensorBoard on
    finds its runs done (same folder, nothing retrained) and logs them from their folders."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    config = write_config(tmp_path, TINY_TAGGING | {"train": {"epochs": 2, "batch_size": 16}})
    args = ["sweep", config, "--grid", "l2.lambda=0,1e-3", "--runs-dir", tmp_path / "runs", "-q"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    sweep_dir = first.stdout.strip().splitlines()[-1]
    summaries = sorted((tmp_path / "runs").glob("tiny/sweep-*/*/summary.json"))
    stamps = [p.stat().st_mtime_ns for p in summaries]
    tracked = [
        "--set",
        "output.mlflow=true",
        "--set",
        "output.tensorboard=true",
        "--set",
        "train.checkpoint_every_steps=2",
    ]
    again = invoke(*args, *tracked)
    assert again.exit_code == 0, again.output
    assert again.stdout.strip().splitlines()[-1] == sweep_dir  # the same sweep
    assert [p.stat().st_mtime_ns for p in summaries] == stamps  # nothing retrained
    experiment = mlflow_store.get_experiment_by_name("tiny")
    parent = json.loads((Path(sweep_dir) / "mlflow.json").read_text())["run_id"]
    runs = mlflow_store.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.data.params["l2.lambda"] for r in runs) == ["0.0", "0.001"]
    for path in summaries:
        summary = json.loads(path.read_text())
        record = json.loads((path.parent / "mlflow.json").read_text())
        run = mlflow_store.get_run(record["run_id"])
        assert run.info.status == "FINISHED" and run.data.metrics["test_loss"] == pytest.approx(summary["test_loss"])
        assert len(mlflow_store.get_metric_history(record["run_id"], "val_loss")) == 2
        events = EventAccumulator(str(path.parent / "tensorboard"))
        events.Reload()
        assert [s.step for s in events.Scalars("val_loss")] == [1, 2]
        assert events.Scalars("final/test_loss")[0].value == pytest.approx(summary["test_loss"])
        content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        assert set(hparams) == {"l2.lambda", "l2.mode", "status"}  # what the sweep varies, λ, the mode, its end
        assert hparams["status"].string_value == summary["status"]
    third = invoke(*args, *tracked)  # logged once: a rerun adds no MLflow run
    assert third.exit_code == 0 and len(mlflow_store.search_runs([experiment.experiment_id])) == 3  # parent, 2 runs


def hparams_session(run_dir: Path) -> dict[str, Any]:
    """The last HParams session a run folder's TensorBoard events hold: {name: value}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    values = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    return {k: v.string_value if v.HasField("string_value") else v.number_value for k, v in values.items()}


def test_every_tune_trial_and_a_diverged_run_get_an_hparams_session_with_their_status(tiny_config, tmp_path):
    pytest.importorskip("tensorboard")
    tune_dir = tmp_path / "tune"
    args = ["tune", tiny_config, "--space", "l2.lambda=0|loguniform(1e-5,1e-1)", "--trials", "2", "--eta", "2"]
    args += ["--min-epochs", "1", "--max-epochs", "2", "--threads", "1", "--tune-dir", tune_dir]
    result = invoke(*args, "--set", "output.tensorboard=true", "-q")
    assert result.exit_code == 0, result.output
    trials = json.loads((tune_dir / "trials.json").read_text())["trials"]
    states = {}
    for trial in trials:
        session = hparams_session(Path(trial["run_dir"]))
        assert set(session) == {"l2.lambda", "l2.mode", "status"}
        assert session["l2.lambda"] == pytest.approx(trial["params"]["l2.lambda"])
        states[trial["state"]] = session["status"]
    assert states == {"completed": "completed", "stopped": "pruned"}  # its folder stays paused at its rung
    diverged = invoke(
        "train",
        tiny_config,
        "--set",
        "l2.lambda=1e300",
        "--set",
        "output.tensorboard=true",
        "--run-dir",
        tmp_path / "run",
        "-q",
    )
    assert diverged.exit_code == 1
    assert hparams_session(tmp_path / "run")["status"] == "diverged"
