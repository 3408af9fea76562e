"""launch.py: how many CPU threads each sweep run gets, and that the runs really get them."""

from __future__ import annotations

import json
import os

import pytest
from helpers import run_rnnl2

from rnnl2.launch import threads_per_run


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
