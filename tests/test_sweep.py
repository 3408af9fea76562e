"""sweep: grid expansion, dry-run commands, parallel runs, resume after a kill, failures, λ selection, Ray."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from helpers import TINY_TAGGING, rnnl2_argv, run_rnnl2, write_config
from typer.testing import CliRunner

from rnnl2.cli import app
from rnnl2.config import load_config
from rnnl2.search.sweep import build_spec, plan_sweep
from rnnl2.search.grid import format_value, parse_axis
from rnnl2.search.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[1]


# Two runs, the first of which diverges (SGD at lr 1e38 leaves weights the model overflows on).
DIVERGING_FIRST = (
    "--grid",
    "optimizer.lr=1e38,0.001",
    "--set",
    "optimizer.name=sgd",
    "--set",
    "data.num_train=16",
    "--set",
    "train.epochs=1",
)


def sweep_cli(*args: str) -> subprocess.CompletedProcess:
    return run_rnnl2("sweep", *args)


def test_grid_values_are_yaml_lists_and_logspace():
    assert parse_axis("l2.lambda=0,logspace(-6,-2,5)") == ("l2.lambda", [0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2])
    assert parse_axis("l2.lambda=1e-5,2.5e-4")[1] == [1e-5, 2.5e-4]  # floats, not PyYAML's strings
    assert parse_axis("optimizer.lr=linspace(0.001,0.003,3)")[1] == [0.001, 0.002, 0.003]
    assert parse_axis("l2.apply_to=[weight_ih,head],[head]")[1] == [["weight_ih", "head"], ["head"]]
    assert parse_axis("l2.mode=penalty,decoupled")[1] == ["penalty", "decoupled"]
    for value in (1e-5, 0.0001, 3.0, [1, 2], "penalty", True):
        assert yaml.safe_load(format_value(value)) == value


def test_plan_is_the_product_of_axes_times_seeds(tiny_config, tmp_path):
    spec = build_spec(tiny_config, ["l2.lambda=0,1e-4,1e-3", "l2.mode=penalty,decoupled"], "0,1", ["train.epochs=1"])
    sweep_dir, runs = plan_sweep(spec, tmp_path / "runs")
    assert len(runs) == 3 * 2 * 2
    assert len({r.run_dir for r in runs}) == len({r.config_hash for r in runs}) == 12
    assert sweep_dir.parent == tmp_path / "runs" / "tiny" and sweep_dir.name.startswith("sweep-")
    assert plan_sweep(spec, tmp_path / "runs")[0] == sweep_dir  # the same command finds the same folder
    cfg = load_config(tiny_config, runs[-1].overrides)
    assert (cfg.l2.lambda_, cfg.l2.mode, cfg.seed, cfg.train.epochs) == (1e-3, "decoupled", 1, 1)


def test_sweep_file_runs_cross_the_grid_and_seeds(tmp_path):
    write_config(tmp_path, TINY_TAGGING)
    (tmp_path / "s.yaml").write_text(
        yaml.safe_dump(
            {
                "config": "tiny.yaml",
                "set": {"train.epochs": 1},
                "grid": {"l2.lambda": "0,logspace(-4,-3,2)"},
                "runs": [{"l2.mode": "penalty"}, {"l2.mode": "weight_decay", "optimizer.name": "sgd"}],
                "seeds": [0, 1],
            }
        )
    )
    _, runs = plan_sweep(build_spec(tmp_path / "s.yaml"), tmp_path / "runs")
    assert len(runs) == 2 * 3 * 2
    assert {r.varying["l2.mode"] for r in runs} == {"penalty", "weight_decay"}
    _, shipped = plan_sweep(build_spec(ROOT / "configs" / "sweeps" / "lambda_path.yaml"), tmp_path / "runs")
    assert len(shipped) == 18


def test_dry_run_prints_exactly_one_train_command_per_run(tiny_config, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "sweep",
            str(tiny_config),
            "--grid",
            "l2.lambda=0,logspace(-4,-3,2)",
            "--seeds",
            "0,1",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 6
    for line in lines:
        argv = shlex.split(line)
        assert argv[:3] == ["rnnl2", "train", str(tiny_config)]
        sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
        load_config(tiny_config, sets)  # every command is a valid config
    assert not (tmp_path / "runs").exists()


def test_bad_grid_value_exits_2_before_any_run(tiny_config, tmp_path):
    result = CliRunner().invoke(
        app, ["sweep", str(tiny_config), "--grid", "l2.lambda=-1,0", "--runs-dir", str(tmp_path)]
    )
    assert result.exit_code == 2 and "l2.lambda" in result.output
    assert not list(tmp_path.glob("tiny/sweep-*"))


def test_2x2_sweep_with_two_jobs_selects_and_best_yaml_reproduces(tiny_config, tmp_path):
    args = [
        str(tiny_config),
        "--grid",
        "l2.lambda=0,0.05",
        "--seeds",
        "0,1",
        "--jobs",
        "2",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--select",
        "val_loss",
        "--json",
    ]
    result = sweep_cli(*args)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    sweep_dir = Path(report["sweep_dir"])
    records = read_manifest(sweep_dir)
    assert [r["status"] for r in records] == ["done"] * 4
    assert all(Path(r["run_dir"], "summary.json").is_file() and r["metrics"]["val_loss"] > 0 for r in records)
    assert len(report["table"]["rows"]) == 2 and report["table"]["by_seed"]
    selection = report["selection"]
    assert selection["n"] == 2 and "test_loss" in selection["test"]
    best = sweep_dir / "best.yaml"
    assert load_config(best) == load_config(Path(selection["run_dir"]) / "config.yaml")
    again = CliRunner().invoke(app, ["train", str(best), "--runs-dir", str(tmp_path / "again"), "--json"])
    assert again.exit_code == 0, again.output
    winner = next(r for r in records if r["run_dir"] == selection["run_dir"])
    assert json.loads(again.stdout)["best_value"] == pytest.approx(winner["metrics"]["best_value"], rel=1e-6)
    rerun = sweep_cli(*args)  # everything is done: nothing runs again
    assert rerun.returncode == 0 and json.loads(rerun.stdout)["skipped"] == 4


def test_resume_after_the_sweep_is_killed_skips_done_runs(tiny_config, tmp_path):
    args = rnnl2_argv(
        "sweep",
        str(tiny_config),
        "--grid",
        "l2.lambda=0,1e-3,1e-2",
        "--set",
        "train.epochs=3",
        "--set",
        "data.num_train=6400",  # about a second a run: long enough for the poll below to see run 2 running
        "--runs-dir",
        str(tmp_path / "runs"),
        "--sweep-dir",
        str(tmp_path / "sweep"),
    )
    driver = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = tmp_path / "sweep" / "sweep.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill it once the first run is done and the second has started
        records = read_manifest(tmp_path / "sweep") if manifest.exists() else []
        if [r["status"] for r in records][:2] == ["done", "running"]:
            break
        time.sleep(0.05)
    else:
        driver.kill()
        pytest.fail(f"the sweep never reached its second run: {records}")
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    first = read_manifest(tmp_path / "sweep")[0]
    done_at = Path(first["run_dir"], "summary.json").stat().st_mtime_ns
    result = subprocess.run(args, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "already done 000-" in result.stderr
    records = read_manifest(tmp_path / "sweep")
    assert [r["status"] for r in records] == ["done"] * 3
    assert Path(first["run_dir"], "summary.json").stat().st_mtime_ns == done_at
    assert all(len(Path(r["run_dir"], "metrics.jsonl").read_text().splitlines()) == 3 for r in records)


def default_sigint() -> None:
    """In the child: SIGINT back to its default (a shell's background job starts with it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_an_interrupted_run_continues_from_its_checkpoint_when_the_sweep_reruns(tiny_config, tmp_path):
    args = rnnl2_argv(
        "sweep",
        str(tiny_config),
        "--grid",
        "l2.lambda=1e-3",
        "--set",
        "train.epochs=30",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--sweep-dir",
        str(tmp_path / "sweep"),
    )
    driver = subprocess.Popen(  # Ctrl-C reaches it even when the tests run as a background job
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, restore_signals=True, preexec_fn=default_sigint
    )
    metrics = tmp_path / "sweep" / "000-l2.lambda=0.001" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        time.sleep(0.05)
    driver.send_signal(signal.SIGINT)  # Ctrl-C: the run saves last.pt and stops, the sweep records it
    assert driver.wait(timeout=60) == 130
    [record] = read_manifest(tmp_path / "sweep")
    assert record["status"] == "interrupted"
    before = metrics.read_text().splitlines()
    assert 2 <= len(before) < 30

    result = subprocess.run(args, capture_output=True, text=True, timeout=240)  # the same sweep, run again
    assert result.returncode == 0, result.stderr
    assert "resume 000-" in result.stderr
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 31))
    assert metrics.read_text().splitlines()[: len(before)] == before  # continued, not restarted
    summary = json.loads((metrics.parent / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"]
    log = (tmp_path / "sweep" / "logs" / "000-l2.lambda=0.001.log").read_text()
    assert "resumed from checkpoints/last.pt" in log


def test_a_failing_run_does_not_stop_the_others_and_exits_1(tiny_config, tmp_path):
    # SGD at lr 1e38 diverges in its first epoch: that training exits 1.
    result = sweep_cli(str(tiny_config), *DIVERGING_FIRST, "--jobs", "2", "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 1, result.stderr
    assert "failed 000-" in result.stderr and "diverged" in result.stderr
    records = read_manifest(Path(result.stdout.strip().splitlines()[-1]))
    assert [r["status"] for r in records] == ["failed", "done"]
    assert records[0]["exit_code"] == 1


def test_fail_fast_leaves_the_rest_pending(tiny_config, tmp_path):
    result = sweep_cli(str(tiny_config), *DIVERGING_FIRST, "--fail-fast", "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 1
    records = read_manifest(Path(result.stdout.strip().splitlines()[-1]))
    assert [r["status"] for r in records] == ["failed", "pending"]


def test_ray_backend_on_a_local_ray_instance(tiny_config, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        result = sweep_cli(
            str(tiny_config),
            "--grid",
            "l2.lambda=0,1e-3",
            "--set",
            "train.epochs=1",
            "--backend",
            "ray",
            "--ray-address",
            address,
            "--runs-dir",
            str(tmp_path / "runs"),
            "--json",
        )
    finally:
        ray.shutdown()
    assert result.returncode == 0, result.stderr
    records = read_manifest(Path(json.loads(result.stdout)["sweep_dir"]))
    assert [r["status"] for r in records] == ["done", "done"]
    assert all(r["metrics"]["epochs_run"] == 1 for r in records)


# ------------------------------------------------- the run folders are the truth (reruns)


def tree_snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under a folder with its bytes: "not changed" means this is equal."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def finished_sweep(tiny_config, tmp_path) -> tuple[list[str], Path]:
    args = [
        "sweep",
        str(tiny_config),
        "--grid",
        "l2.lambda=0,1e-3",
        "--set",
        "train.epochs=1",
        "--sweep-dir",
        str(tmp_path / "sweep"),
        "-q",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return args, tmp_path / "sweep"


def run_folders(sweep_dir: Path) -> dict[str, dict[str, bytes]]:
    return {p.name: tree_snapshot(p) for p in sorted(sweep_dir.glob("[0-9][0-9][0-9]-*")) if p.is_dir()}


def test_rerun_after_the_driver_died_before_recording_keeps_the_finished_runs(finished_sweep):
    """The driver was killed between the runs finishing and the manifest recording it."""
    args, sweep_dir = finished_sweep
    before = run_folders(sweep_dir)
    records = read_manifest(sweep_dir)
    stale = [{**r, "status": "running", "metrics": None, "exit_code": None} for r in records]
    (sweep_dir / "sweep.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stale))
    for attempt in range(2):  # the first rerun exited 1 on main, the second deleted both runs
        result = CliRunner().invoke(app, args[:-1])
        assert result.exit_code == 0, result.output
        assert result.output.count("already done") == 2
        assert run_folders(sweep_dir) == before
    assert [r["status"] for r in read_manifest(sweep_dir)] == ["done", "done"]
    assert all(r["metrics"]["best_value"] is not None for r in read_manifest(sweep_dir))


@pytest.mark.parametrize("damage", ["deleted", "truncated", "garbage"])
def test_a_lost_or_damaged_manifest_is_rebuilt_from_the_run_folders(finished_sweep, damage):
    args, sweep_dir = finished_sweep
    before = run_folders(sweep_dir)
    manifest = sweep_dir / "sweep.jsonl"
    if damage == "deleted":
        manifest.unlink()
    elif damage == "truncated":
        manifest.write_bytes(manifest.read_bytes()[:150])
    else:
        manifest.write_text('{"not": "a record"}\n[1, 2]\n')
    result = CliRunner().invoke(app, args[:-1])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "Traceback" not in result.output
    assert run_folders(sweep_dir) == before
    assert [r["status"] for r in read_manifest(sweep_dir)] == ["done", "done"]


def test_a_failed_attempt_is_set_aside_with_its_log_not_deleted(finished_sweep):
    args, sweep_dir = finished_sweep
    first = sorted(sweep_dir.glob("000-*"))[0]
    (first / "summary.json").write_text(json.dumps({"status": "diverged"}))  # as a failed attempt leaves it
    (sweep_dir / "logs" / f"{first.name}.log").write_text("error: training diverged\n")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    aside = first.with_name(f"{first.name}.failed-1")
    assert json.loads((aside / "summary.json").read_text())["status"] == "diverged"
    assert (sweep_dir / "logs" / f"{aside.name}.log").read_text() == "error: training diverged\n"
    assert json.loads((first / "summary.json").read_text())["status"] == "completed"  # run again


def test_a_run_whose_folder_holds_another_config_is_not_counted_as_done(finished_sweep):
    args, sweep_dir = finished_sweep
    first = sorted(sweep_dir.glob("000-*"))[0]
    text = (first / "config.yaml").read_text()
    (first / "config.yaml").write_text(text.replace("hidden_size: 8", "hidden_size: 9"))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (first.with_name(f"{first.name}.failed-1") / "config.yaml").read_text().count("hidden_size: 9") == 1
    assert "hidden_size: 8" in (first / "config.yaml").read_text()


def test_a_grid_too_large_is_refused_at_once(tiny_config, tmp_path):
    started = time.perf_counter()
    for grid in (
        ["l2.lambda=logspace(-6,-2,100000000)"],
        ["l2.lambda=logspace(-6,-2,5000)", "optimizer.lr=logspace(-4,-2,5000)"],
    ):
        result = CliRunner().invoke(
            app,
            [
                "sweep",
                str(tiny_config),
                *[a for g in grid for a in ("--grid", g)],
                "--runs-dir",
                str(tmp_path / "runs"),
                "--dry-run",
            ],
        )
        assert result.exit_code == 2 and "at most 10,000" in result.output, result.output
    assert time.perf_counter() - started < 30
    assert not (tmp_path / "runs").exists()


def test_a_crash_of_the_driver_closes_every_running_record(tiny_config, tmp_path):
    """A bug in the driver (here: its event printer) while runs are out stops them resumably and
    closes their manifest lines; none is left `running`, and the same sweep then finishes."""
    from rnnl2.launch import Launch
    from rnnl2.search.sweep_run import run_sweep

    spec = build_spec(tiny_config, ["l2.lambda=0,1e-3"], None, ["train.epochs=3"])
    sweep_dir, runs = plan_sweep(spec, tmp_path / "runs")

    started = []

    def broken_printer(kind, record):  # fails once both runs are out, and on every event after
        started.append(kind)
        if len(started) >= 2:
            raise RuntimeError("printer bug")

    with pytest.raises(RuntimeError, match="printer bug"):
        run_sweep(spec, runs, sweep_dir, Launch(jobs=2, threads=1), broken_printer)
    statuses = [r["status"] for r in read_manifest(sweep_dir)]
    assert statuses == ["interrupted", "interrupted"], statuses  # stopped at once, resumable
    again = run_sweep(spec, runs, sweep_dir, Launch(jobs=2, threads=1))
    assert [r["status"] for r in again.records] == ["done", "done"] and not again.failed
