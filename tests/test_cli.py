"""The command line end to end through Typer's CliRunner: train → eval, output contracts and
exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import TINY_TAGGING, write_config
from rnnl2.cli import app
from rnnl2.config import load_config
from rnnl2.runs import read_metrics
from rnnl2.checkpoints import save_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one torch thread


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def no_traceback(result) -> bool:
    return "Traceback" not in result.output and (result.exception is None or isinstance(result.exception, SystemExit))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, single_thread):
    """`rnnl2 train` on the tiny config once, shared by the eval tests."""
    folder = tmp_path_factory.mktemp("cli")
    config = write_config(folder, TINY_TAGGING)
    result = invoke("train", config, "--runs-dir", folder / "runs")
    assert result.exit_code == 0, result.output
    return config, folder, result


def test_train_prints_the_run_folder_last(trained):
    config, folder, result = trained
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert run_dir.parent == folder / "runs" / "tiny" and run_dir.is_dir()
    assert load_config(run_dir / "config.yaml") == load_config(config)
    assert len(read_metrics(run_dir)) == TINY_TAGGING["train"]["epochs"]
    assert (run_dir / "checkpoints" / "best.pt").is_file() and (run_dir / "checkpoints" / "last.pt").is_file()
    # not a terminal: one plain progress line per epoch on stderr, then the summary
    epochs = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == TINY_TAGGING["train"]["epochs"] and "val_loss" in epochs[0]
    assert "finished" in result.stderr
    assert "data: 64 / 16 / 16 sequences (train/val/test)" in result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    verdict = "better" if summary["test_loss"] < summary["baselines"]["unigram"]["test_loss"] else "worse"
    assert f"vs naive unigram (test_loss {summary['baselines']['unigram']['test_loss']:.4g}): {verdict}" in (
        result.stderr
    )


def test_eval_json_round_trip(trained):
    _, _, result = trained
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    evaluated = invoke("eval", run_dir, "--json", "--device", "cpu")
    assert evaluated.exit_code == 0, evaluated.output
    record = json.loads(evaluated.stdout)
    assert record["split"] == "test" and record["checkpoint"].endswith("best.pt")
    assert 0.0 <= record["test_accuracy"] <= 1.0 and record["test_loss"] > 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert record["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-6)
    assert json.loads((run_dir / "eval-test.json").read_text()) == record
    assert record["baseline"] == "unigram" and record["baselines"]["unigram"] == {
        k: v for k, v in summary["baselines"]["unigram"].items() if k.startswith("test_")
    }


def test_eval_a_checkpoint_file_on_another_split_prints_a_table(trained):
    _, _, result = trained
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    evaluated = invoke("eval", run_dir / "checkpoints" / "last.pt", "--split", "val")
    assert evaluated.exit_code == 0, evaluated.output
    assert "val_loss" in evaluated.stdout and "val_accuracy" in evaluated.stdout
    assert "unigram val_accuracy" in evaluated.stdout and "vs naive unigram (val_loss" in evaluated.stdout
    record = json.loads((run_dir / "eval-val.json").read_text())
    last = read_metrics(run_dir)[-1]
    assert record["val_loss"] == pytest.approx(last["val_loss"], rel=1e-6)  # last.pt is the last epoch


def test_quiet_prints_only_the_summary_line(tiny_config, tmp_path):
    result = invoke("train", tiny_config, "--runs-dir", tmp_path / "runs", "-q")
    assert result.exit_code == 0, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "finished" in result.stderr
    (line,) = result.stdout.strip().splitlines()
    assert Path(line).is_dir()


def test_json_prints_the_summary_object(tiny_config, tmp_path):
    result = invoke("train", tiny_config, "--runs-dir", tmp_path / "runs", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed" and Path(summary["run_dir"]).is_dir()


def test_verbose_lists_lambda_per_parameter(tiny_config, tmp_path):
    result = invoke(
        "train",
        tiny_config,
        "--runs-dir",
        tmp_path / "runs",
        "-v",
        "--set",
        "train.epochs=1",
        "--set",
        "l2.apply_to=[weight_hh]",
    )
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.stderr.splitlines() if line.count("│") >= 3}
    assert "1e-3" in rows["rnn.weight_hh_l0"] and "—" in rows["rnn.weight_ih_l0"]


def test_run_dir_option(tiny_config, tmp_path):
    target = tmp_path / "exact"
    result = invoke("train", tiny_config, "--run-dir", target, "--set", "train.epochs=1")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(target)
    assert (target / "metrics.jsonl").is_file()


def test_non_empty_run_dir_is_refused(tiny_config, tmp_path):
    target = tmp_path / "used"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    result = invoke("train", tiny_config, "--run-dir", target)
    assert result.exit_code == 2 and no_traceback(result)
    assert "not empty" in result.stderr
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]


def test_a_glob_matching_nothing_exits_2_without_a_run_folder(tiny_config, tmp_path):
    result = invoke("train", tiny_config, "--runs-dir", tmp_path / "runs", "--set", "l2.apply_to=[rnn.weight_ih_l3*]")
    assert result.exit_code == 2 and no_traceback(result)
    assert "matches no parameter" in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*"))


def test_a_diverging_run_exits_1_without_traceback(tiny_config, tmp_path):
    result = invoke(
        "train",
        tiny_config,
        "--runs-dir",
        tmp_path / "runs",
        "--set",
        "model.cell=rnn",
        "--set",
        "model.nonlinearity=relu",
        "--set",
        "optimizer.name=sgd",
        "--set",
        "optimizer.lr=1e10",
    )
    assert result.exit_code == 1 and no_traceback(result)
    assert "diverged" in result.stderr and "optimizer.lr" in result.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_an_unavailable_device_exits_2_without_a_run_folder(tiny_config, tmp_path):
    result = invoke("train", tiny_config, "--runs-dir", tmp_path / "runs", "--set", "device=cuda:1")
    assert result.exit_code == 2 and no_traceback(result)
    assert "CUDA is not available" in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*"))


def test_bad_split_exits_2(trained):
    _, _, result = trained
    run_dir = result.stdout.strip().splitlines()[-1]
    evaluated = invoke("eval", run_dir, "--split", "dev")
    assert evaluated.exit_code == 2 and no_traceback(evaluated)
    assert "--split" in evaluated.stderr and "'dev'" in evaluated.stderr


@pytest.mark.parametrize("kind", ["text", "missing", "folder"])
def test_eval_of_a_non_checkpoint_exits_2_with_a_message(tmp_path, kind):
    path = tmp_path / "model.pt"
    if kind == "text":
        path.write_text("these are not weights")
    elif kind == "folder":
        path = tmp_path
    result = invoke("eval", path)
    assert result.exit_code == 2 and no_traceback(result)
    expected = {"text": "damaged checkpoint", "missing": "no such checkpoint", "folder": "no checkpoints/best.pt"}[kind]
    assert expected in result.stderr
    assert not list(tmp_path.glob("eval-*.json"))


@pytest.mark.parametrize(
    "payload",
    [{"model": {}}, {"model": {}, "config": {"name": "x"}, "data_spec": {"task": "lm"}}],
    ids=["no_config", "bad_data_spec"],
)
def test_eval_of_an_incomplete_checkpoint_exits_2(tmp_path, payload):
    path = tmp_path / "partial.pt"
    save_checkpoint(path, payload)
    result = invoke("eval", path)
    assert result.exit_code == 2 and no_traceback(result)
    assert "lacks a usable config or data spec" in result.stderr


def test_train_of_a_missing_config_is_a_usage_error(tmp_path):
    result = invoke("train", tmp_path / "nope.yaml")
    assert result.exit_code == 2 and no_traceback(result)


def test_python_m_rnnl2_help():
    done = subprocess.run([sys.executable, "-m", "rnnl2", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for command in ("train", "eval", "config"):
        assert command in done.stdout


def test_a_sigterm_a_library_wraps_in_its_own_error_still_exits_130(tiny_config, monkeypatch):
    """pydantic turns a KeyboardInterrupt raised inside a serializer into its own error: after a
    SIGTERM that is an interruption (130), not an internal error (3); without one it is a bug."""
    import os
    import signal

    import rnnl2.cli.run_commands as commands

    def signalled_inside_a_library(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # the boundary's handler raises KeyboardInterrupt here
        except KeyboardInterrupt as error:
            raise RuntimeError(f"Error calling function: KeyboardInterrupt: {error}") from None

    monkeypatch.setattr(commands, "load_config", signalled_inside_a_library)
    result = CliRunner().invoke(app, ["config", "show", str(tiny_config)])
    assert result.exit_code == 130 and "interrupted" in result.output and "internal error" not in result.output

    def a_bug(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(commands, "load_config", a_bug)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tiny_config.parent))
    result = CliRunner().invoke(app, ["config", "show", str(tiny_config)])
    assert result.exit_code == 3 and "internal error" in result.output  # the flag belongs to one command
