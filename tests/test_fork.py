"""`rnnl2 fork`: a run started where another was at its best epoch is exact, leaves the source as
it was, and refuses what it cannot do with a clear message."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from helpers import TINY_TAGGING, write_config
from rnnl2.cli import app
from rnnl2.runs import read_metrics

pytestmark = pytest.mark.usefixtures("single_thread")

STEEP = {
    **TINY_TAGGING,
    "data": {**TINY_TAGGING["data"], "num_train": 16},
    "model": {"cell": "lstm", "hidden_size": 32},
    "l2": {"lambda": 0.0},
    "optimizer": {"name": "adam", "lr": 0.05},
    "train": {"epochs": 6, "batch_size": 16},
}
"""Adam at a high lr on 16 sequences: validation turns before the last epoch, so best ≠ last."""


def invoke(*args: str):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def train(config: Path, run_dir: Path, *sets: str) -> Path:
    overrides = [word for key in sets for word in ("--set", key)]
    result = invoke("train", config, "--run-dir", run_dir, *overrides, "-q")
    assert result.exit_code == 0, result.output
    return run_dir


def rows_after(run_dir: Path, epoch: int) -> list[dict]:
    drop = ("samples_per_s", "seconds")  # timing: the columns that may differ
    return [{k: v for k, v in row.items() if k not in drop} for row in read_metrics(run_dir) if row["epoch"] > epoch]


def fingerprint(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != ".lock"
    }


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, Path, int]:
    """A λ = 0 run of 6 epochs whose best epoch p is before its last, its config file, and p."""
    folder = tmp_path_factory.mktemp("fork")
    config = write_config(folder, STEEP)
    run_dir = train(config, folder / "source")
    best_epoch = json.loads((run_dir / "summary.json").read_text())["best_epoch"]
    assert 1 <= best_epoch < 6, "the config should make validation turn before the last epoch"
    return config, run_dir, best_epoch


def test_a_fork_at_the_best_epoch_continues_exactly_as_a_run_stopped_there(source, tmp_path):
    config, run_dir, p = source
    before = fingerprint(run_dir)
    result = invoke("fork", run_dir, tmp_path / "fork")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(tmp_path / "fork")
    summary = json.loads((tmp_path / "fork" / "summary.json").read_text())
    assert (summary["status"], summary["epochs_run"], summary["forked_from"]["epoch"]) == ("paused", p, p)
    assert [row["epoch"] for row in read_metrics(tmp_path / "fork")] == list(range(1, p + 1))
    stopped = train(config, tmp_path / "stopped", f"train.epochs={p}")  # the same run, trained to p only
    later = ("--force", "--set", "l2.lambda=0.01", "--set", f"train.epochs={p + 2}", "-q")
    for folder in (tmp_path / "fork", stopped):
        resumed = invoke("train", "--resume", folder, *later)
        assert resumed.exit_code == 0, resumed.output
    assert rows_after(tmp_path / "fork", p) == rows_after(stopped, p) and len(rows_after(stopped, p)) == 2
    forked = torch.load(tmp_path / "fork" / "checkpoints" / "last.pt", weights_only=True)["model"]
    straight = torch.load(stopped / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(forked[key], straight[key]) for key in straight)
    assert fingerprint(run_dir) == before  # the source is left as it was


def test_best_checkpoint_stores_its_best_weights_once(source):
    _, run_dir, _ = source
    payload = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    best, model = payload["resume"]["best_model"], payload["model"]
    assert all(best[key].data_ptr() == model[key].data_ptr() for key in model)  # one storage, not two


def test_a_fork_at_last_takes_the_last_checkpoint(source, tmp_path):
    _, run_dir, _ = source
    assert invoke("fork", run_dir, tmp_path / "fork", "--at", "last").exit_code == 0
    assert json.loads((tmp_path / "fork" / "summary.json").read_text())["epochs_run"] == 6
    assert (tmp_path / "fork" / "checkpoints" / "last.pt").read_bytes() == (
        run_dir / "checkpoints" / "last.pt"
    ).read_bytes()


def test_fork_refuses_an_existing_target_a_non_run_and_an_old_best_checkpoint(source, tmp_path):
    _, run_dir, _ = source
    (tmp_path / "taken").mkdir()
    taken = invoke("fork", run_dir, tmp_path / "taken")
    assert taken.exit_code == 2 and "already exists" in taken.output
    not_a_run = invoke("fork", tmp_path / "taken", tmp_path / "new")
    assert not_a_run.exit_code == 2 and "not a run folder" in not_a_run.output
    old = tmp_path / "old"
    assert invoke("fork", run_dir, old, "--at", "last").exit_code == 0
    payload = torch.load(old / "checkpoints" / "best.pt", weights_only=True)
    del payload["resume"]  # as best.pt was written before it kept the training state
    torch.save(payload, old / "checkpoints" / "best.pt")
    refused = invoke("fork", old, tmp_path / "new")
    assert refused.exit_code == 2 and "fork --at last instead" in refused.output
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".new*"))


def test_fork_refuses_a_target_inside_the_source_and_a_source_being_written(source, tmp_path):
    from rnnl2.runs import FolderLock

    _, run_dir, _ = source
    inside = invoke("fork", run_dir, run_dir / "sub")
    assert inside.exit_code == 2 and "inside" in inside.output and not (run_dir / "sub").exists()
    with FolderLock(run_dir):  # as a `train --resume` of the source holds it
        busy = invoke("fork", run_dir, tmp_path / "new")
    assert busy.exit_code == 2 and "another rnnl2 process" in busy.output and not (tmp_path / "new").exists()


def test_two_forks_of_one_run_may_copy_it_at_once_but_no_writer_meanwhile(source, tmp_path):
    from rnnl2.errors import RunLocked
    from rnnl2.runs import FolderLock

    _, run_dir, _ = source
    with FolderLock(run_dir, shared=True):  # as another `rnnl2 fork` of it holds it while it copies
        second = invoke("fork", run_dir, tmp_path / "second")
        with pytest.raises(RunLocked, match="being copied by `rnnl2 fork`"):
            FolderLock(run_dir).acquire()  # a `train --resume` of the source waits for the copies, and is told so
    assert second.exit_code == 0, second.output
