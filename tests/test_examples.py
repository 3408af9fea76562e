"""The scripting contract: examples/lambda_sweep.sh, exit codes, `--json` = one JSON object on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rnnl2.cli import app

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "lambda_sweep.sh"


def run_script(tiny_config: Path, tmp_path: Path, *lambdas: str) -> subprocess.CompletedProcess:
    bindir = Path(sys.executable).parent  # the rnnl2 console script of this interpreter
    env = {
        **os.environ,
        "RUNS_DIR": str(tmp_path / "runs"),
        "EXTRA": "--set train.epochs=1",
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return subprocess.run(
        ["bash", str(SCRIPT), str(tiny_config), *lambdas], capture_output=True, text=True, env=env, timeout=240
    )


def test_lambda_sweep_script_prints_the_best_lambda(tiny_config, tmp_path):
    result = run_script(tiny_config, tmp_path, "0", "0.05")
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith("best λ: ") and line.split()[2] in ("0", "0.0", "0.05")
    assert len(list((tmp_path / "runs" / "tiny").iterdir())) == 2
    assert result.stderr.count("λ=") == 2


def test_lambda_sweep_script_passes_on_exit_code_2(tiny_config, tmp_path):
    result = run_script(tiny_config, tmp_path, "-1")
    assert result.returncode == 2
    assert "l2.lambda" in result.stderr and result.stdout == ""


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One real `rnnl2 train --json` process on the tiny config."""
    from helpers import TINY_TAGGING, write_config

    folder = tmp_path_factory.mktemp("contract")
    config = write_config(folder, {**TINY_TAGGING, "train": {"epochs": 1, "batch_size": 16}})
    result = subprocess.run(
        [sys.executable, "-m", "rnnl2", "train", str(config), "--runs-dir", str(folder / "runs"), "--json"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    return config, result


def test_train_json_is_one_object_on_stdout(trained):
    _, result = trained
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert result.stdout.count("\n") == 1 and isinstance(summary, dict)
    assert Path(summary["run_dir"], "summary.json").is_file()


def test_train_last_stdout_line_is_the_run_dir(trained, tmp_path):
    config, _ = trained
    result = CliRunner().invoke(app, ["train", str(config), "--runs-dir", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    assert Path(result.stdout.strip().splitlines()[-1]).joinpath("config.yaml").is_file()


def test_eval_and_compare_json_are_one_object_on_stdout(trained):
    _, result = trained
    run_dir = json.loads(result.stdout)["run_dir"]
    for args in (["eval", run_dir, "--json"], ["compare", run_dir, "--json"]):
        out = CliRunner().invoke(app, args)
        assert out.exit_code == 0, out.output
        assert isinstance(json.loads(out.stdout), dict) and out.stdout.count("\n") == 1


def test_usage_errors_exit_2(tiny_config, tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["train", str(tiny_config), "--set", "l2.lambda=-1"]).exit_code == 2
    assert runner.invoke(app, ["sweep", str(tiny_config), "--grid", "nonsense"]).exit_code == 2
    assert runner.invoke(app, ["sweep", str(tiny_config), "--backend", "slurm"]).exit_code == 2
    assert runner.invoke(app, ["compare", str(tmp_path / "missing")]).exit_code == 2


def test_tune_lambda_script_prints_the_tuned_and_the_adapted_lambda(tiny_config, tmp_path):
    bindir = Path(sys.executable).parent
    env = {
        **os.environ,
        "RUNS_DIR": str(tmp_path / "runs"),
        "TRIALS": "3",
        "EXTRA": "--set train.epochs=3 --set data.num_train=64",
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    script = ROOT / "examples" / "tune_lambda.sh"
    result = subprocess.run(
        ["bash", str(script), str(tiny_config)], capture_output=True, text=True, env=env, timeout=240
    )
    assert result.returncode == 0, result.stderr
    tuned, adapted = result.stdout.splitlines()
    assert tuned.startswith("tune: λ = ") and adapted.startswith("adaptive: λ = ")
    assert float(adapted.split()[3]) != 1e-5  # λ moved during the run
    (tune_dir,) = (tmp_path / "runs" / "tiny").glob("tune-*")
    assert len(list(tune_dir.glob("trial-*"))) == 3
