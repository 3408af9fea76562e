"""--backend slurm through submitit's local executor: runs as jobs equal `rnnl2 train`, a preempted
job saves, is requeued and resumes exactly, the manifest sees it; a missing extra or a bad option exits 2."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import TINY_TAGGING, rnnl2_argv, run_rnnl2, write_config, write_fake_run
from typer.testing import CliRunner

from rnnl2.cli import app
from rnnl2.runs import read_metrics, read_summary
from rnnl2.run_state import folder_config_hash
from rnnl2.launch.slurm import CLUSTER_ENV, SlurmRun, job_parameters
from rnnl2.search.manifest import read_manifest
from rnnl2.launch.workers import RESUMED

needs_submitit = pytest.mark.skipif(importlib.util.find_spec("submitit") is None, reason="the slurm extra")

TIMING = ("seconds", "samples_per_s")
LOCAL = {**os.environ, CLUSTER_ENV: "local"}


def rows_without_timing(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in read_metrics(run_dir)]


def train_reference(config: Path, run_dir: Path, *overrides: str) -> subprocess.Popen:
    """`rnnl2 train` of the same configuration, on one thread as the jobs' runs."""
    sets = [arg for item in overrides for arg in ("--set", item)]
    argv = rnnl2_argv("train", str(config), *sets, "--threads", "1", "--run-dir", str(run_dir), "--quiet")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def assert_same_run(run_dir: Path, reference: Path) -> None:
    assert rows_without_timing(run_dir) == rows_without_timing(reference)
    ran, ref = read_summary(run_dir), read_summary(reference)
    assert (ran["status"], ran["test_loss"], ran["best_value"]) == (ref["status"], ref["test_loss"], ref["best_value"])


@needs_submitit
def test_a_sweep_of_jobs_finishes_like_rnnl2_train(tiny_config, tmp_path):
    lambdas, sweep = ["0", "1e-3"], tmp_path / "sweep"
    argv = ["sweep", str(tiny_config), "--grid", f"l2.lambda={','.join(lambdas)}", "--threads", "1"]
    result = run_rnnl2(*argv, "--backend", "slurm", "--sweep-dir", str(sweep), "--json", env=LOCAL)
    assert result.returncode == 0, result.stderr
    trains = [train_reference(tiny_config, tmp_path / f"ref-{lam}", f"l2.lambda={lam}") for lam in lambdas]
    records = read_manifest(sweep)
    assert [r["status"] for r in records] == ["done", "done"]
    assert all(r["job_id"] and r["job_state"] == "FINISHED" for r in records)
    assert len(list((sweep / "slurm").glob("*_result.pkl"))) == 2  # submitit's own folder
    assert [t.wait(timeout=240) for t in trains] == [0, 0], [t.stderr.read() for t in trains]
    for record, lam in zip(records, lambdas):
        assert_same_run(Path(record["run_dir"]), tmp_path / f"ref-{lam}")


def process_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def find_job_run(run_dir: Path) -> int | None:
    """The pid of the `rnnl2 train` child of a submitit job that trains `run_dir`."""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
            parent = (Path("/proc") / str(parent_of(int(entry.name))) / "cmdline").read_bytes() if argv else b""
        except (OSError, ValueError):
            continue
        if argv[1:4] == [b"-m", b"rnnl2", b"train"] and str(run_dir).encode() in argv and b"submitit" in parent:
            return int(entry.name)
    return None


def wait_for(condition, what: str, seconds: float = 120):
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)
    return value


@needs_submitit
@pytest.mark.skipif(not Path("/proc/self/status").is_file() or not hasattr(os, "waitid"), reason="Linux: /proc, waitid")
def test_a_preempted_job_saves_is_requeued_and_resumes_exactly(tmp_path):
    """Preemption as submitit sees it: SIGUSR2 to the job. Its run is frozen (SIGSTOP) part-way, so the
    signal lands mid-run whatever the machine's speed; it thaws once the job has asked it to stop."""
    raw = {
        **TINY_TAGGING,
        "data": {**TINY_TAGGING["data"], "num_train": 4096},  # long enough epochs to freeze the run mid-way
        "train": {"epochs": 6, "batch_size": 16},  # even on a fast, quiet machine
    }
    config, sweep = write_config(tmp_path, raw), tmp_path / "sweep"
    argv = rnnl2_argv("sweep", str(config), "--threads", "1", "--backend", "slurm", "--sweep-dir", str(sweep), "-q")
    driver = subprocess.Popen(argv, env=LOCAL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reference = train_reference(config, tmp_path / "reference")
    try:
        run_dir = wait_for(lambda: next(sweep.glob("000-*/metrics.jsonl"), None), "epoch 1").parent
        child = wait_for(lambda: find_job_run(run_dir), "the job's run")
        os.kill(child, signal.SIGSTOP)
        wait_for(lambda: process_status(child)["State"].startswith("T"), "the run to stop")
        assert read_summary(run_dir) is None, "the run finished before it could be preempted"
        os.kill(parent_of(child), signal.SIGUSR2)  # the job: submitit calls SlurmRun.checkpoint
        term = 1 << (signal.SIGTERM - 1)
        wait_for(lambda: int(process_status(child)["ShdPnd"], 16) & term, "the job to SIGTERM its run")
        record = next(r for r in read_manifest(sweep))
        assert (record["status"], record["job_state"]) == ("running", "RUNNING")
        os.kill(child, signal.SIGCONT)
        assert driver.wait(timeout=240) == 0, driver.stderr.read()
    finally:
        driver.kill()
    (record,) = read_manifest(sweep)
    assert (record["status"], record["exit_code"], record["metrics"]["epochs_run"]) == ("done", 0, 6)
    log = (sweep / "logs" / f"{record['name']}.log").read_text()
    assert log.count(RESUMED) == 1 and "interrupted" in log.partition(RESUMED)[0]  # stopped, then resumed once
    assert "Requeued job" in "".join(p.read_text() for p in (sweep / "slurm").glob("*_log.out"))
    assert reference.wait(timeout=240) == 0, reference.stderr.read()
    assert_same_run(run_dir, tmp_path / "reference")


@needs_submitit
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="Linux: /proc")
def test_a_stopped_driver_cancels_its_jobs_and_a_rerun_resumes_them(tmp_path):
    """SIGTERM to the driver (as Ctrl-C): it cancels the job, whose run saves; the manifest says
    interrupted, and the same command continues the run from its last.pt."""
    raw = {
        **TINY_TAGGING,
        "data": {**TINY_TAGGING["data"], "num_train": 4096},  # epochs long enough to stop the run mid-way
        "train": {"epochs": 12, "batch_size": 16},  # even on a fast, quiet machine
    }
    config, sweep = write_config(tmp_path, raw), tmp_path / "sweep"
    argv = ["sweep", str(config), "--threads", "1", "--backend", "slurm", "--sweep-dir", str(sweep), "-q"]
    driver = subprocess.Popen(rnnl2_argv(*argv), env=LOCAL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_dir = wait_for(lambda: next(sweep.glob("000-*/metrics.jsonl"), None), "epoch 1").parent
        child = wait_for(lambda: find_job_run(run_dir), "the job's run")
        os.kill(child, signal.SIGSTOP)  # frozen mid-run until the driver has cancelled its job
        wait_for(lambda: process_status(child)["State"].startswith("T"), "the run to stop")
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=120) == 130, driver.stderr.read()
    finally:
        driver.kill()
    (record,) = read_manifest(sweep)
    assert (record["status"], record["exit_code"]) == ("interrupted", 130)
    os.kill(child, signal.SIGCONT)  # the cancelled job's SIGTERM (its parent died) now reaches the run
    wait_for(lambda: not Path(f"/proc/{child}").exists() or process_status(child)["State"].startswith("Z"), "the run")
    assert read_summary(run_dir)["status"] == "interrupted" and (run_dir / "checkpoints" / "last.pt").is_file()
    rerun = run_rnnl2(*argv, env=LOCAL)
    assert rerun.returncode == 0, rerun.stderr
    (record,) = read_manifest(sweep)
    assert (record["status"], record["metrics"]["epochs_run"]) == ("done", 12)
    assert [row["epoch"] for row in read_metrics(run_dir)] == list(range(1, 13))
    assert (sweep / "logs" / f"{record['name']}.log").read_text().count(RESUMED) == 1


def test_a_job_requeued_after_its_run_ended_only_reads_it(tmp_path):
    run_dir = write_fake_run(tmp_path, lam=1e-3, seed=0)
    call = SlurmRun(
        ["train", "never-run.yaml"], [], str(run_dir), str(tmp_path / "run.log"), {}, str(tmp_path),
        config_hashes=[folder_config_hash(run_dir)],
    )  # fmt: skip
    outcome = call()
    assert outcome["exit_code"] == 0 and outcome["summary"]["status"] == "completed"
    assert call.child is None  # nothing was started


def test_options_become_submitit_parameters():
    parameters = job_parameters(["partition=gpu", "timeout_min=120", "gpus_per_node=1"], 4, "rnnl2-x")
    assert parameters == {
        "name": "rnnl2-x",
        "timeout_min": 120,
        "cpus_per_task": 4,
        "slurm_partition": "gpu",
        "gpus_per_node": 1,
    }
    assert job_parameters([], None, "n")["cpus_per_task"] == 1


def sweep_in_process(tiny_config, tmp_path, *extra: str):
    args = ["sweep", str(tiny_config), "--backend", "slurm", "--sweep-dir", str(tmp_path / "sweep"), *extra]
    return CliRunner().invoke(app, args)


@needs_submitit
@pytest.mark.parametrize(
    "option, message",
    [("partition", "expected KEY=VALUE"), ("bogus=1", "Unknown argument 'bogus'"), ("timeout_min=soon", "timeout_min")],
)
def test_a_bad_slurm_option_exits_2_and_names_it(tiny_config, tmp_path, monkeypatch, option, message):
    monkeypatch.setenv(CLUSTER_ENV, "local")
    result = sweep_in_process(tiny_config, tmp_path, "--slurm", option)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert [r["status"] for r in read_manifest(tmp_path / "sweep")] == ["pending"]


def test_without_submitit_slurm_exits_2_with_the_install_line(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ImportError
    result = sweep_in_process(tiny_config, tmp_path)
    assert result.exit_code == 2, result.output
    assert "pip install 'rnnl2[slurm]'" in result.output


@needs_submitit
def test_without_sbatch_slurm_exits_2_and_points_to_the_local_executor(tiny_config, tmp_path, monkeypatch):
    monkeypatch.delenv(CLUSTER_ENV, raising=False)
    monkeypatch.setattr("shutil.which", lambda name: None)
    result = sweep_in_process(tiny_config, tmp_path)
    assert result.exit_code == 2, result.output
    assert f"{CLUSTER_ENV}=local" in result.output
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())  # the plan is kept; a rerun goes on
