"""workers.py: a run in a warm worker is the run `rnnl2 train` makes alone, bit for bit, even
after another run changed process-wide torch state; a worker outlives a run that fails, is
replaced when a run kills it, and `--isolate` gives every run a fresh process."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from helpers import TINY_TAGGING, rnnl2_argv, run_rnnl2, write_config
from rnnl2.runs import read_metrics
from rnnl2.status import FINISHED
from rnnl2.search.manifest import read_manifest
from rnnl2.cli.worker import run_task
from rnnl2.launch.workers import GlobalState, torch_flags

TIMING = ("seconds", "samples_per_s")
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}

pytestmark = pytest.mark.usefixtures("single_thread")


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def assert_same_run(expected: Path, got: Path) -> None:
    assert without_timing(read_metrics(got)) == without_timing(read_metrics(expected))
    reference, weights_got = weights(expected), weights(got)
    assert reference.keys() == weights_got.keys()
    for name in reference:
        assert torch.equal(reference[name], weights_got[name]), name
    summaries = [json.loads((d / "summary.json").read_text()) for d in (expected, got)]
    for key in ("status", "best_epoch", "best_value", "test_loss", "test_accuracy", "threads"):
        assert summaries[0][key] == summaries[1][key], key


def test_a_worker_run_is_bitwise_the_run_train_makes_alone_after_global_state_changed(tmp_path):
    raw = TINY_TAGGING | {"model": {"cell": "lstm", "hidden_size": 8, "dropout": 0.2, "num_layers": 2}}
    config = write_config(tmp_path, raw)
    alone = tmp_path / "alone"
    done = run_rnnl2("train", str(config), "--run-dir", str(alone), "--threads", "1", "-q")
    assert done.returncode == 0, done.stderr

    baseline = GlobalState.capture()
    flags = torch_flags()
    # What an earlier run in the same worker might have left behind.
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(1234)
    random.seed(99)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(2)
    torch.set_float32_matmul_precision("medium")
    os.environ["OMP_NUM_THREADS"] = "7"
    try:
        argv = ["train", str(config), "--run-dir", str(tmp_path / "warm"), "--threads", "1", "--quiet"]
        code = run_task(argv, tmp_path / "warm.log", resume=False, baseline=baseline)
        assert code == 0, (tmp_path / "warm.log").read_text()
        assert torch_flags() == flags  # and the worker is back where it started
    finally:
        GlobalState.restore(baseline)
    assert_same_run(alone, tmp_path / "warm")
    assert "finished completed" in (tmp_path / "warm.log").read_text()


def test_a_failing_run_leaves_its_worker_serving_and_bad_input_is_its_own_failure(tmp_path):
    config = write_config(tmp_path, TINY_TAGGING | {"train": {"epochs": 1, "batch_size": 16}})
    baseline = GlobalState.capture()
    missing = ["train", str(tmp_path / "missing.yaml"), "--quiet"]
    assert run_task(missing, tmp_path / "bad.log", resume=False, baseline=baseline) == 2
    assert "does not exist" in (tmp_path / "bad.log").read_text()
    argv = ["train", str(config), "--run-dir", str(tmp_path / "good"), "--threads", "1", "--quiet"]
    assert run_task(argv, tmp_path / "good.log", resume=False, baseline=baseline) == 0
    assert json.loads((tmp_path / "good" / "summary.json").read_text())["status"] == "completed"


def sweep_argv(config: Path, folder: Path, *extra: str) -> list[str]:
    return rnnl2_argv("sweep", str(config), "--sweep-dir", str(folder), "--threads", "1", "-q", *extra)


def test_one_worker_runs_every_run_and_isolate_gives_each_its_own_process(tiny_config, tmp_path):
    grid = ("--grid", "l2.lambda=0,1e-3,1e-2", "--set", "train.epochs=1")
    for folder, extra in (("warm", ()), ("isolated", ("--isolate",))):
        done = subprocess.run(sweep_argv(tiny_config, tmp_path / folder, *grid, *extra), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    warm, isolated = read_manifest(tmp_path / "warm"), read_manifest(tmp_path / "isolated")
    assert len({r["pid"] for r in warm}) == 1
    assert len({r["pid"] for r in isolated}) == 3
    for a, b in zip(warm, isolated):
        assert_same_run(tmp_path / "isolated" / b["name"], tmp_path / "warm" / a["name"])


def test_a_run_that_kills_its_worker_fails_and_a_fresh_worker_takes_the_next(tiny_config, tmp_path):
    """The first run is long; the test SIGKILLs the worker running it (as the OOM killer
    would). The run is marked failed, a new worker runs the second one, the sweep exits 1, and
    a rerun continues the killed run from its last checkpoint."""
    folder = tmp_path / "sweep"
    grid = ("--grid", "train.epochs=60,1", "--set", "train.checkpoint_every_steps=1")
    driver = subprocess.Popen(sweep_argv(tiny_config, folder, *grid), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = folder / "000-train.epochs=60"
    deadline = time.monotonic() + 120
    while not (first / "checkpoints" / "last.pt").exists():
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
        time.sleep(0.05)
    (pid,) = {r["pid"] for r in read_manifest(folder) if r["status"] == "running"}
    os.kill(pid, signal.SIGKILL)
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == 1, err
    killed, second = read_manifest(folder)
    assert (killed["status"], killed["error"]) == ("failed", "killed by SIGKILL")
    assert second["status"] == "done" and second["pid"] != pid
    assert "failed 000-train.epochs=60: killed by SIGKILL" in err.decode()

    rerun = subprocess.run(sweep_argv(tiny_config, folder, *grid), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads((first / "summary.json").read_text())
    assert summary["status"] in FINISHED and summary["resumed_from"]
