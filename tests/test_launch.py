"""rnnl2.launch: how many CPU threads each sweep run gets, and that the runs really get them."""

from __future__ import annotations

import json
import os

import pytest
from helpers import run_rnnl2

from rnnl2.launch import jobs_for, threads_per_run


def test_threads_flag_wins_then_an_explicit_omp_num_threads_then_the_split(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads_per_run(5, jobs=2, cores=16) == 5
    assert threads_per_run(None, jobs=1, cores=16) == 3  # a sweep with --jobs 1 no longer overrides it
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads_per_run(None, jobs=4, cores=16) == 4
    assert threads_per_run(None, jobs=8, cores=2) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    assert threads_per_run(None, jobs=2, cores=8) == 4


@pytest.mark.parametrize(("env", "flag", "expected"), [("1", [], 1), (None, ["--threads", "1"], 1)])
def test_sweep_runs_record_the_thread_count_they_ran_with(tiny_config, tmp_path, env, flag, expected):
    environment = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if env is not None:
        environment["OMP_NUM_THREADS"] = env
    sweep = ("sweep", str(tiny_config), "--grid", "l2.lambda=0", "--set", "train.epochs=1", "--sweep-dir")
    done = run_rnnl2(*sweep, str(tmp_path / "s"), "-q", *flag, env=environment)
    assert done.returncode == 0, done.stderr
    (summary,) = (tmp_path / "s").glob("000-*/summary.json")
    assert json.loads(summary.read_text())["threads"] == expected


# ------------------------------------------------------------------ --runs-per-gpu


@pytest.mark.parametrize(("gpus", "k"), [(["0", "1"], 3), (["5"], 4), (["2", "7", "3"], 1)])
def test_runs_per_gpu_gives_every_gpu_k_slots(gpus, k, tmp_path, monkeypatch):
    """With K runs per GPU the jobs are K × GPUs, and the warm worker of each slot starts with its
    CUDA_VISIBLE_DEVICES: every visible GPU exactly K times (no GPU needed: the list is made up)."""
    from rnnl2.launch import local as launch

    started = []

    def start(cls, env, log_path):  # records the worker's environment instead of starting it
        started.append(env)
        return object()

    monkeypatch.setattr(launch.WarmWorker, "start", classmethod(start))
    jobs = jobs_for(None, gpus, k)
    slots = launch.WarmSlots(threads=1, gpus=gpus, logs=tmp_path)
    for slot in range(jobs):
        slots.worker(slot)
    handed = [env["CUDA_VISIBLE_DEVICES"] for env in started]
    assert jobs == len(gpus) * k
    assert sorted(handed) == sorted(gpus * k)


def test_isolated_runs_get_the_same_gpu_per_slot(tmp_path, monkeypatch):
    from rnnl2.launch import local as launch

    envs = []

    class Child:
        pid = 1

    monkeypatch.setattr(launch, "start_child", lambda command, env, log: envs.append(env) or Child())
    slots = launch.IsolatedSlots(threads=1, gpus=["0", "1"])
    for slot in range(4):
        slots.start(slot, ["train", "x.yaml"], tmp_path / f"{slot}.log")
    assert [env["CUDA_VISIBLE_DEVICES"] for env in envs] == ["0", "1", "0", "1"]


def test_runs_per_gpu_refuses_more_jobs_than_k_per_gpu_and_no_gpu():
    from rnnl2.errors import ConfigError

    assert jobs_for(None, [], None) == 1 and jobs_for(3, [], None) == 3
    assert jobs_for(5, ["0", "1"], 4) == 5
    assert jobs_for(None, [], 2, backend="ray") == 1  # Ray places by num_gpus = 1/K instead
    with pytest.raises(ConfigError, match="at most 8 runs at once"):
        jobs_for(9, ["0", "1"], 4)
    with pytest.raises(ConfigError, match="no GPU is visible"):
        jobs_for(None, [], 2)


def test_sweep_with_runs_per_gpu_and_no_gpu_exits_2(tiny_config, tmp_path):
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = run_rnnl2(
        "sweep", str(tiny_config), "--runs-per-gpu", "2", "--sweep-dir", str(tmp_path / "s"), env=environment
    )
    assert done.returncode == 2 and "--runs-per-gpu: no GPU is visible" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "s").exists()
