"""A killed tune recovers: real `rnnl2 tune` processes, real signals, at a rung boundary and in
the middle of a rung. Every rerun ends with exit 0, every trial done, and trials.csv and
best.yaml equal to those of a tune nothing stopped (same seed)."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import TINY_TAGGING, rnnl2_argv, write_config
from rnnl2.launch.workers import RESUMED

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# 3 trials, rungs at epochs 1 and 3: rung 0 trains all three for one epoch, rung 1 the best one
# on to epoch 3. Epochs of ~0.3 s with a checkpoint every 10 steps, so a signal lands mid-rung.
CONFIG = copy.deepcopy(TINY_TAGGING) | {
    "data": {**TINY_TAGGING["data"], "num_train": 2400},
    "train": {"epochs": 3, "batch_size": 8, "checkpoint_every_steps": 10},
}
SPACE = "l2.lambda=loguniform(1e-6,1e-1)"


def tune_argv(folder: Path, jobs: int) -> list[str]:
    config = folder / "tiny.yaml"
    return rnnl2_argv(
        "tune", str(config), "--space", SPACE, "--trials", "3", "--min-epochs", "1", "--eta", "3",
        "--tune-dir", str(folder / "T"), "--jobs", str(jobs), "--threads", "1", "--quiet",
    )  # fmt: skip


def outputs(folder: Path) -> tuple[str, str]:
    """trials.csv with the run folders' paths made relative to the tune folder, and best.yaml."""
    tune_dir = folder / "T"
    trials = (tune_dir / "trials.csv").read_text().replace(str(tune_dir), "T")
    return trials, (tune_dir / "best.yaml").read_text()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("reference")
    write_config(folder, CONFIG)
    done = subprocess.run(tune_argv(folder, 1), capture_output=True, text=True, env=ENV, timeout=240)
    assert done.returncode == 0, done.stderr
    return outputs(folder)


def trials_json(folder: Path) -> list[dict]:
    try:
        return json.loads((folder / "T" / "trials.json").read_text())["trials"]
    except (OSError, ValueError, KeyError):  # not written yet, or being replaced
        return []


def wait_until(condition, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the tune never got there"
        time.sleep(0.02)


def mid_rung(folder: Path) -> bool:
    """Rung 0 half done: one trial paused at epoch 1, another one's last.pt written mid-epoch."""
    trials = trials_json(folder)
    paused = [t for t in trials if t["state"] == "paused"]
    others = [t for t in trials if t["state"] != "paused"]
    started = any((folder / "T" / t["name"] / "checkpoints" / "last.pt").exists() for t in others)
    return bool(paused) and started and len(paused) < 3


def rung_boundary(folder: Path) -> bool:
    """Rung 0 decided: a trial was promoted to rung 1 and has not resumed yet."""
    return any(t["state"] == "promoted" for t in trials_json(folder))


def worker_pids(driver: int) -> list[int]:
    """The driver's children: its warm workers."""
    children = Path(f"/proc/{driver}/task/{driver}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


@pytest.mark.parametrize(
    "jobs, sig, when",
    [  # each signal, job count and moment once (all four pairings were checked by hand: the same)
        (1, signal.SIGKILL, mid_rung),
        (2, signal.SIGTERM, rung_boundary),
    ],
    ids=["kill-1-mid", "term-2-boundary"],
)
def test_rerun_of_a_killed_driver_finishes_as_if_never_stopped(tmp_path, reference, jobs, sig, when):
    write_config(tmp_path, CONFIG)
    driver = subprocess.Popen(tune_argv(tmp_path, jobs), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    wait_until(lambda: when(tmp_path), driver)
    workers = worker_pids(driver.pid)
    driver.send_signal(sig)
    driver.communicate(timeout=60)
    assert driver.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 130)
    for pid in workers:  # orphans of a killed driver end on their own; wait for their locks to go
        while Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text():
            time.sleep(0.05)
    rerun = subprocess.run(tune_argv(tmp_path, jobs), capture_output=True, text=True, env=ENV, timeout=240)
    assert rerun.returncode == 0, rerun.stderr
    assert "failed" not in rerun.stderr
    states = {t["state"] for t in trials_json(tmp_path)}
    assert states <= {"completed", "stopped"} and "completed" in states
    assert outputs(tmp_path) == reference


def test_killed_worker_resumes_at_once_and_twice_killed_waits_for_the_rerun(tmp_path, reference):
    """A worker SIGKILLed once: its trial resumes in the same call. Killed again: the rung is not
    decided without it, the call exits 1 saying so, and the rerun resumes it."""
    write_config(tmp_path, CONFIG)
    driver = subprocess.Popen(tune_argv(tmp_path, 1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    wait_until(lambda: mid_rung(tmp_path), driver)
    name = next(t["name"] for t in trials_json(tmp_path) if t["state"] != "paused")  # the one training
    os.kill(worker_pids(driver.pid)[0], signal.SIGKILL)
    log = tmp_path / "T" / "logs" / f"{name}.log"
    wait_until(lambda: log.exists() and RESUMED in log.read_text(), driver)  # its resume has begun
    os.kill(worker_pids(driver.pid)[0], signal.SIGKILL)
    _, stderr = driver.communicate(timeout=120)
    text = stderr.decode()
    assert driver.returncode == 1, text
    assert f"{name}: killed by SIGKILL; resuming it" in text
    assert f"1 trials were killed twice: {name}; run the same command again" in text
    assert next(t for t in trials_json(tmp_path) if t["name"] == name)["state"] == "pending"
    rerun = subprocess.run(tune_argv(tmp_path, 1), capture_output=True, text=True, env=ENV, timeout=240)
    assert rerun.returncode == 0, rerun.stderr
    assert outputs(tmp_path) == reference
