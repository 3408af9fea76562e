"""The run folder: unique names, atomic writes, metrics, checkpoints, reproducibility, and how
`train.run` stops (early stopping, max_steps)."""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import TINY_TAGGING
from rnnl2.config import ConfigError, Rnnl2Error, RunConfig, apply_overrides, load_config, validate_config
from rnnl2.data import DataSpec
from rnnl2.evaluate import evaluate_checkpoint
from rnnl2.models import build_model
from rnnl2 import runs
from rnnl2.runs import MetricsLog, atomic_write, create_run_dir, read_metrics, write_json, write_text
from rnnl2.checkpoints import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, resolve_checkpoint, save_checkpoint
from rnnl2.train import run
from rnnl2.setup import build_setup

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one torch thread

TIMING = {"seconds", "samples_per_s"}


def make_config(*overrides: str) -> RunConfig:
    return validate_config(apply_overrides(copy.deepcopy(TINY_TAGGING), list(overrides)))


def visible_and_hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------- run folders


def test_run_dirs_created_in_the_same_second_are_distinct(tmp_path, monkeypatch):
    monkeypatch.setattr(runs.time, "strftime", lambda fmt: "20260101-000000")
    made = [create_run_dir(tmp_path, "tiny")[0] for _ in range(50)]
    assert len(set(made)) == 50
    assert all(p.is_dir() and p.parent == tmp_path / "tiny" and p.name.startswith("20260101-000000-") for p in made)


def test_a_colliding_random_id_is_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(runs.time, "strftime", lambda fmt: "20260101-000000")
    ids = iter(["aaaaaa", "aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(runs.secrets, "token_hex", lambda n: next(ids))
    first, _ = create_run_dir(tmp_path, "tiny")
    (first / "marker").write_text("first run")
    second, _ = create_run_dir(tmp_path, "tiny")
    assert first.name.endswith("-aaaaaa") and second.name.endswith("-bbbbbb")
    assert (first / "marker").read_text() == "first run"  # never reused


def test_explicit_run_dir_must_be_new_or_empty(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    made, lock = create_run_dir(tmp_path, "x", empty)
    assert made == empty
    lock.release()
    assert create_run_dir(tmp_path, "x", tmp_path / "new" / "deep")[0] == tmp_path / "new" / "deep"
    empty = tmp_path / "other"
    empty.mkdir()
    (empty / "keep.txt").write_text("data")
    with pytest.raises(Rnnl2Error, match="not empty"):
        create_run_dir(tmp_path, "x", empty)
    assert visible_and_hidden(empty) == ["keep.txt"]


# ------------------------------------------------------------------ atomic writes


def test_atomic_writes_leave_no_temp_files(tmp_path):
    write_text(tmp_path / "a.txt", "hello")
    write_json(tmp_path / "b.json", {"x": [1, 2]})
    write_json(tmp_path / "b.json", {"x": [3]})  # replace
    save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.ones(2)}})
    assert visible_and_hidden(tmp_path) == ["a.txt", "b.json", "c.pt"]
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": [3]}


def test_a_failed_write_keeps_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "summary.json"
    write_json(target, {"old": True})

    def crash(handle):
        handle.write('{"new": ')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash)
    assert json.loads(target.read_text()) == {"old": True}
    assert visible_and_hidden(tmp_path) == ["summary.json"]


def test_metrics_log_writes_the_same_names_to_jsonl_and_csv(tmp_path):
    log = MetricsLog(tmp_path)
    log.append({"epoch": 1, "val_loss": 0.5})
    log.append({"epoch": 2, "val_loss": 0.25})
    assert read_metrics(tmp_path) == [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.25}]
    with (tmp_path / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [{"epoch": "1", "val_loss": "0.5"}, {"epoch": "2", "val_loss": "0.25"}]
    assert read_metrics(tmp_path / "nowhere") == []


# ------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_and_weights_only(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"model": {"w": torch.arange(3.0)}, "epoch": 4, "config": {"name": "x"}})
    raw = torch.load(path, weights_only=True)
    assert raw["epoch"] == 4 and torch.equal(raw["model"]["w"], torch.arange(3.0))
    assert load_checkpoint(path)["config"] == {"name": "x"}


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("content", ["not a checkpoint at all", "pickle", "truncated", "foreign", "unhashable"])
def test_bad_checkpoint_files_are_a_clear_error(tmp_path, content, capsys):
    path = tmp_path / "bad.pt"
    if content == "pickle":
        torch.save({"format": CHECKPOINT_FORMAT, "x": Evil()}, path)
    elif content == "truncated":
        save_checkpoint(path, {"model": {"w": torch.ones(100)}})
        path.write_bytes(path.read_bytes()[:200])
    elif content == "unhashable":  # a pickle whose dict key is a dict: TypeError inside torch.load
        path.write_bytes(b"\x80\x02}q\x00}q\x01K\x01s.")
    elif content == "foreign":
        torch.save({"state_dict": {"w": torch.ones(1)}}, path)  # loads, but is not ours
    else:
        path.write_text(content)
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)
    assert "must never run" not in capsys.readouterr().out


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(min_size=1, max_size=64) | st.text(min_size=1, max_size=40).map(str.encode))
def test_any_garbage_file_is_a_checkpoint_error(tmp_path, garbage):
    path = tmp_path / "garbage.pt"
    path.write_bytes(garbage)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_resolve_checkpoint_prefers_best_then_last(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(CheckpointError, match="no checkpoints"):
        resolve_checkpoint(tmp_path)
    save_checkpoint(folder / "checkpoints" / "last.pt", {"epoch": 2})
    assert resolve_checkpoint(folder).name == "last.pt"
    save_checkpoint(folder / "checkpoints" / "best.pt", {"epoch": 1})
    assert resolve_checkpoint(folder).name == "best.pt"
    with pytest.raises(CheckpointError, match="no such"):
        resolve_checkpoint(tmp_path / "missing.pt")


# ------------------------------------------------------------------- a whole run


@pytest.fixture(scope="module")
def finished(tmp_path_factory, single_thread):
    """One tiny run, with the Setup kept so the trained model can be compared with its checkpoint."""
    cfg = make_config("train.epochs=3")
    setup = build_setup(cfg)
    result = run(cfg, tmp_path_factory.mktemp("runs"), setup=setup)
    return cfg, setup, result


def test_run_folder_contents(finished):
    cfg, _, result = finished
    folder = result.run_dir
    assert folder.parent.name == "tiny"
    names = set(visible_and_hidden(folder))
    assert {"config.yaml", "metrics.jsonl", "metrics.csv", "summary.json", "checkpoints"} <= names
    assert [n for n in names if n.startswith(".")] == [".lock"]  # no temp files left; the lock file stays
    assert "run.json" in names
    assert validate_config(__import__("yaml").safe_load((folder / "config.yaml").read_text())) == cfg
    rows = read_metrics(folder)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and [r["step"] for r in rows] == [4, 8, 12]
    for key in (
        "train_data_loss",
        "penalty",
        "train_loss",
        "val_loss",
        "val_accuracy",
        "lr",
        "weight_norm",
        "grad_norm",
        "seconds",
        "samples_per_s",
    ):
        assert all(isinstance(r[key], float) for r in rows), key
    with (folder / "metrics.csv").open() as handle:
        assert next(csv.reader(handle)) == list(rows[0])
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_run"] == 3
    assert summary["best_value"] == min(r["val_loss"] for r in rows)
    assert rows[summary["best_epoch"] - 1]["val_loss"] == summary["best_value"]
    assert {"test_loss", "test_accuracy", "val_loss"} <= set(summary)
    assert summary["device"] == "cpu" and summary["versions"]["torch"] == torch.__version__
    assert summary["parameters"] == sum(p.numel() for p in finished[1].model.parameters())


def test_checkpoints_load_with_weights_only_and_reproduce_the_model(finished):
    cfg, setup, result = finished
    best = torch.load(result.run_dir / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(result.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 3 and last["step"] == 12 and last["optimizer"]["state"]
    assert validate_config(best["config"]) == cfg
    model = build_model(validate_config(best["config"]).model, DataSpec.from_dict(best["data_spec"]))
    model.load_state_dict(best["model"])
    model.eval()
    setup.model.eval()  # `run` leaves the best weights in the setup's model
    inputs = setup.test.inputs
    with torch.no_grad():
        assert torch.equal(model(inputs)[0], setup.model(inputs)[0])
    evaluated = evaluate_checkpoint(result.run_dir, "test", device="cpu")
    assert evaluated["test_loss"] == pytest.approx(result.summary["test_loss"], rel=1e-6)
    assert evaluated["epoch"] == result.summary["best_epoch"]


def test_same_seed_gives_identical_metrics(tmp_path, finished):
    cfg, _, first = finished
    second = run(load_config(first.run_dir / "config.yaml"), tmp_path)  # the saved config repeats the run
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
    assert strip(read_metrics(first.run_dir)) == strip(read_metrics(second.run_dir))
    other = run(make_config("train.epochs=3", "seed=1"), tmp_path)
    assert strip(read_metrics(other.run_dir)) != strip(read_metrics(first.run_dir))


def test_same_seed_gives_identical_metrics_with_dropout(tmp_path):
    cfg = make_config("train.epochs=2", "model.num_layers=2", "model.dropout=0.3")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
    assert strip(read_metrics(run(cfg, tmp_path).run_dir)) == strip(read_metrics(run(cfg, tmp_path).run_dir))


@pytest.mark.parametrize("schedule", ["step", "multistep", "cosine"])
def test_learning_rate_schedule_steps_once_per_epoch(tmp_path, schedule):
    cfg = make_config(
        "train.epochs=4",
        "optimizer.lr=0.01",
        f"optimizer.scheduler.name={schedule}",
        "optimizer.scheduler.step_size=1",
        "optimizer.scheduler.gamma=0.5",
        "optimizer.scheduler.milestones=[2, 3]",
        "optimizer.scheduler.min_lr=0.001",
        "output.save_checkpoints=false",
    )
    lrs = [row["lr"] for row in read_metrics(run(cfg, tmp_path).run_dir)]  # the lr each epoch trained with
    if schedule == "step":
        expected = [0.01 * 0.5**e for e in range(4)]
    elif schedule == "multistep":  # Zaremba's form: held for 2 epochs, then halved after each
        expected = [0.01, 0.01, 0.005, 0.0025]
    else:
        expected = [0.001 + 0.009 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert lrs == pytest.approx(expected, rel=1e-9)


def test_early_stopping_with_patience_stops_early(tmp_path):
    # lr so small the weights cannot move: the validation loss never improves after epoch 1
    cfg = make_config(
        "train.epochs=10",
        "train.early_stopping.patience=2",
        "optimizer.name=sgd",
        "optimizer.lr=1e-30",
        "output.save_checkpoints=false",
    )
    result = run(cfg, tmp_path)
    assert result.summary["status"] == "early_stopped"
    assert result.summary["epochs_run"] == 3 and result.summary["best_epoch"] == 1
    assert not (result.run_dir / "checkpoints").exists()


def test_early_stopping_on_a_higher_is_better_metric(tmp_path):
    cfg = make_config(
        "train.epochs=10",
        "train.early_stopping.patience=1",
        "train.early_stopping.metric=val_accuracy",
        "train.early_stopping.mode=max",
        "optimizer.name=sgd",
        "optimizer.lr=1e-30",
    )
    result = run(cfg, tmp_path)
    assert result.summary["status"] == "early_stopped" and result.summary["epochs_run"] == 2


def test_max_steps_stops_mid_epoch(tmp_path):
    result = run(make_config("train.epochs=10", "train.max_steps=6"), tmp_path)  # 4 steps per epoch
    rows = read_metrics(result.run_dir)
    assert [r["step"] for r in rows] == [4, 6]
    assert result.summary["status"] == "max_steps" and result.summary["steps"] == 6


@pytest.mark.parametrize(
    "stop",
    [
        ["train.early_stopping.metric=val_mse"],
        ["train.early_stopping.metric=val_accuracy", "train.early_stopping.mode=min"],
    ],
)
def test_an_unusable_early_stopping_metric_is_a_config_error(tmp_path, stop):
    with pytest.raises(ConfigError, match="early_stopping"):
        run(make_config(*stop), tmp_path)
    assert not any(tmp_path.iterdir())  # no run folder


def flip_tensor_bytes(path: Path, count: int = 64) -> None:
    """XOR `count` bytes in the middle of the largest tensor stored in a checkpoint archive."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length + info.file_size // 2 - count // 2
    for i in range(start, start + count):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def test_a_checkpoint_with_flipped_tensor_bytes_is_refused_as_damaged(finished, tmp_path):
    from typer.testing import CliRunner

    from rnnl2.cli import app

    _, _, result = finished
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes((result.run_dir / "checkpoints" / "best.pt").read_bytes())
    flip_tensor_bytes(damaged)
    with pytest.raises(CheckpointError, match="damaged checkpoint.*CRC"):
        load_checkpoint(damaged)
    evaluated = CliRunner().invoke(app, ["eval", str(damaged)])
    assert evaluated.exit_code == 2 and "damaged checkpoint" in evaluated.output


def test_eval_on_a_folder_it_cannot_write_prints_the_result_with_a_warning(finished, monkeypatch):
    import errno

    from typer.testing import CliRunner

    import rnnl2.runs
    from rnnl2.cli import app

    def read_only(path, data):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    _, _, result = finished
    monkeypatch.setattr(rnnl2.runs, "write_json", read_only)
    evaluated = CliRunner().invoke(app, ["eval", str(result.run_dir), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "test_loss" in json.loads(evaluated.stdout) and "could not save" in evaluated.stderr


def test_every_file_a_run_writes_has_the_same_mode(finished):
    _, _, result = finished
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in result.run_dir.rglob("*") if p.is_file()}
    assert len(set(modes.values())) == 1, modes


def test_a_killed_writers_temp_files_are_removed_and_nothing_else(tmp_path):
    from rnnl2.runs import remove_write_leftovers

    (tmp_path / ".trials.json.k2j3").write_text("{")  # atomic_write's temp file of a SIGKILLed driver
    (tmp_path / ".lock").write_text("")
    (tmp_path / ".trials.json.dir").mkdir()
    (tmp_path / "trials.json").write_text("{}")
    remove_write_leftovers(tmp_path, ("trials.json", "sweep.jsonl"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", ".trials.json.dir", "trials.json"]
