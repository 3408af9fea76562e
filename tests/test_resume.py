"""Exact resume: a run killed with SIGKILL (mid-epoch, at an epoch boundary, or between its
metrics row and its checkpoint) and continued with `rnnl2 train --resume` ends with the same
parameters, metrics and summary as a run that was never stopped."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from helpers import TINY_TAGGING, run_rnnl2, write_config
from rnnl2.cli import app
from rnnl2.runs import read_metrics

TIMING = ("seconds", "samples_per_s")
# 96 sequences / batch 8 = 12 steps per epoch; last.pt every 5 steps; dropout and a step
# schedule, so RNG, optimizer and scheduler state all have to come back.
RESUMABLE = copy.deepcopy(TINY_TAGGING) | {
    "name": "resumable",
    "data": {**TINY_TAGGING["data"], "num_train": 96},
    "model": {"cell": "lstm", "hidden_size": 8, "num_layers": 2, "dropout": 0.3},
    "optimizer": {"name": "adam", "lr": 0.01, "scheduler": {"name": "step", "step_size": 1, "gamma": 0.8}},
    "train": {"epochs": 3, "batch_size": 8, "checkpoint_every_steps": 5, "early_stopping": {"patience": 5}},
}

# Runs training in a subprocess and SIGKILLs itself at the chosen moment (a real kill -9:
# nothing is flushed or cleaned up).
KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from rnnl2.config import load_config
    from rnnl2.train import Observer, run

    config, run_dir, hook, epoch, step = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])

    class Killer(Observer):
        current = 0
        def on_epoch_start(self, e, steps):
            self.current = e
            if hook == "epoch_start" and e == epoch:
                os.kill(os.getpid(), signal.SIGKILL)
        def on_step(self, s, loss):
            if hook == "step" and self.current == epoch and s == step:
                os.kill(os.getpid(), signal.SIGKILL)
        def on_epoch_end(self, row):  # after the metrics row is written, before the checkpoint
            if hook == "epoch_end" and row["epoch"] == epoch:
                os.kill(os.getpid(), signal.SIGKILL)

    run(load_config(Path(config)), run_dir=run_dir, observer=Killer())
""")

KILL_POINTS = {
    "mid_epoch": ("step", 2, 10),  # last.pt from global step 20 = epoch 2, batch 8 of 12
    "epoch_boundary": ("epoch_start", 2, 0),  # last.pt from the end of epoch 1
    "row_before_checkpoint": ("epoch_end", 2, 0),  # metrics.jsonl is one epoch ahead of last.pt
}


# One thread in every subprocess: the runs compare bit for bit whatever the machine, and
# tiny models on a busy 2-core machine train several times faster than with two.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


pytestmark = pytest.mark.usefixtures("single_thread")


def rnnl2(*args: str) -> subprocess.Popen:
    return spawn("-m", "rnnl2", *args)


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def finish(process: subprocess.Popen, expected: int = 0) -> str:
    out, err = process.communicate(timeout=120)
    assert process.returncode == expected, f"exit {process.returncode}\n{out}\n{err}"
    return out + err


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def final_parameters(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory) -> dict[str, Path]:
    """One uninterrupted reference run plus one killed-and-resumed run per kill point,
    the subprocesses of each stage started together."""
    folder = tmp_path_factory.mktemp("resume")
    config = write_config(folder, RESUMABLE)
    dirs = {name: folder / name for name in ["reference", *KILL_POINTS]}
    started = [rnnl2("train", str(config), "--run-dir", str(dirs["reference"]), "-q")]
    for name, (hook, epoch, step) in KILL_POINTS.items():
        started.append(spawn("-c", KILLER, str(config), str(dirs[name]), hook, str(epoch), str(step)))
    finish(started[0])
    for process in started[1:]:
        finish(process, expected=-9)
    resumed = [rnnl2("train", "--resume", str(dirs[name]), "-q") for name in KILL_POINTS]
    for process in resumed:
        finish(process)
    return dirs


@pytest.mark.parametrize("kill_point", list(KILL_POINTS))
def test_killed_then_resumed_run_equals_uninterrupted_run(killed_and_resumed, kill_point):
    reference, resumed = killed_and_resumed["reference"], killed_and_resumed[kill_point]
    expected, got = final_parameters(reference), final_parameters(resumed)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert without_timing(read_metrics(resumed)) == without_timing(read_metrics(reference))
    assert [row["epoch"] for row in read_metrics(resumed)] == [1, 2, 3]  # none duplicated, none missing
    summaries = [json.loads((d / "summary.json").read_text()) for d in (reference, resumed)]
    for key in ("status", "best_epoch", "best_value", "steps", "epochs_run", "final", "test_loss", "test_accuracy"):
        assert summaries[0][key] == summaries[1][key], key
    assert (resumed / "metrics.csv").read_text().count("\n") == 4  # header + 3 epochs


def test_resume_reports_where_it_continued(killed_and_resumed):
    summary = json.loads((killed_and_resumed["mid_epoch"] / "summary.json").read_text())
    assert summary["resumed_from"] == [{"epoch": 1, "step": 20, "step_in_epoch": 8}]
    summary = json.loads((killed_and_resumed["row_before_checkpoint"] / "summary.json").read_text())
    assert summary["resumed_from"] == [{"epoch": 1, "step": 20, "step_in_epoch": 8}]
    summary = json.loads((killed_and_resumed["epoch_boundary"] / "summary.json").read_text())
    assert summary["resumed_from"] == [{"epoch": 1, "step": 12, "step_in_epoch": 0}]


def test_last_checkpoint_loads_weights_only_with_every_state(killed_and_resumed):
    payload = torch.load(killed_and_resumed["reference"] / "checkpoints" / "last.pt", weights_only=True)
    state = payload["resume"]
    assert {"python", "torch"} <= set(state["rng"])
    assert state["shuffle_state"].dtype == torch.uint8
    assert payload["scheduler"] is not None and payload["optimizer"]["state"]
    assert state["best_model"].keys() == payload["model"].keys()


# ------------------------------------------------------------------- CLI refusals


def train_in_process(*args: str):
    return CliRunner().invoke(app, ["train", *args])


@pytest.fixture
def finished_run(tmp_path) -> tuple[Path, Path]:
    config = write_config(tmp_path, TINY_TAGGING)
    run_dir = tmp_path / "run"
    result = train_in_process(str(config), "--run-dir", str(run_dir), "-q")
    assert result.exit_code == 0, result.output
    return config, run_dir


def test_resume_refuses_a_different_config_without_force(finished_run):
    config, run_dir = finished_run
    (run_dir / "summary.json").unlink()  # as if the run had been killed
    result = train_in_process(str(config), "--set", "train.epochs=4", "--resume", str(run_dir))
    assert result.exit_code == 2
    assert "train.epochs: 2 → 4" in result.output and "--force" in result.output
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2]


def test_resume_with_force_extends_a_finished_run(finished_run):
    config, run_dir = finished_run
    result = train_in_process("--resume", str(run_dir), "--set", "train.epochs=3")
    assert result.exit_code == 2 and "already finished" in result.output
    result = train_in_process("--resume", str(run_dir), "--set", "train.epochs=3", "--force", "-q")
    assert result.exit_code == 0, result.output
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2, 3]
    assert "epochs: 3" in (run_dir / "config.yaml").read_text()
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["config"]["train"]["epochs"] == 3


def test_resume_with_the_same_config_is_accepted(finished_run):
    config, run_dir = finished_run
    (run_dir / "summary.json").unlink()
    result = train_in_process(str(config), "--resume", str(run_dir), "-q")
    assert result.exit_code == 0, result.output
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2]


def test_resume_needs_a_run_folder_with_a_last_checkpoint(tmp_path, finished_run):
    _, run_dir = finished_run
    result = train_in_process("--resume", str(tmp_path / "nothing-here"))
    assert result.exit_code == 2 and "not a run folder" in result.output
    (run_dir / "summary.json").unlink()
    (run_dir / "checkpoints" / "last.pt").unlink()
    result = train_in_process("--resume", str(run_dir))
    assert result.exit_code == 2 and "no checkpoints/last.pt" in result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------- atomic checkpoint writes

HALF_WRITE = textwrap.dedent("""
    import io, sys, time, torch
    from pathlib import Path
    from rnnl2.runs import atomic_write
    from rnnl2.checkpoints import CHECKPOINT_FORMAT, save_checkpoint

    path = Path(sys.argv[1])
    save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "epoch": 1})
    newer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "model": {"w": torch.ones(1_000_000)}, "epoch": 2}, newer)

    def write_half_then_hang(handle):
        data = newer.getvalue()
        handle.write(data[: len(data) // 2])
        handle.flush()
        print("half written", flush=True)
        time.sleep(120)

    atomic_write(path, write_half_then_hang, binary=True)
""")

SAVE_FOREVER = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    from rnnl2.checkpoints import save_checkpoint

    path, epoch = Path(sys.argv[1]), 0
    while True:
        epoch += 1
        save_checkpoint(path, {"model": {"w": torch.full((2_000_000,), float(epoch))}, "epoch": epoch})
        print(epoch, flush=True)
""")


def test_kill_during_a_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    from rnnl2.checkpoints import load_checkpoint

    half, looping = tmp_path / "half" / "last.pt", tmp_path / "loop" / "last.pt"
    writer = spawn("-c", HALF_WRITE, str(half))
    saver = spawn("-c", SAVE_FOREVER, str(looping))
    assert writer.stdout.readline().strip() == "half written"
    for _ in range(3):  # a few saves done, the next one in flight: 8 MB each
        saver.stdout.readline()
    writer.kill()
    saver.kill()
    writer.wait(), saver.wait()
    payload = load_checkpoint(half)
    assert payload["epoch"] == 1 and torch.equal(payload["model"]["w"], torch.zeros(3))
    assert list(half.parent.glob(".last.pt.*")), "the kill should have left the half-written temp file"
    payload = load_checkpoint(looping)
    assert payload["epoch"] >= 3 and torch.equal(
        payload["model"]["w"], torch.full((2_000_000,), float(payload["epoch"]))
    )


# ------------------------------------------------------------------ unwritable output


def test_output_under_a_file_is_refused_before_training(tmp_path, tiny_config):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the runs folder should go")
    for option in ("--runs-dir", "--run-dir"):
        result = train_in_process(str(tiny_config), option, str(blocker / "runs"))
        assert result.exit_code == 2, result.output
        assert "is a file, not a folder" in result.output and "Traceback" not in result.output
    assert blocker.read_text().startswith("a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders, so permissions cannot refuse it")
def test_read_only_runs_folder_is_refused_before_training(tmp_path, tiny_config):
    runs = tmp_path / "runs"
    runs.mkdir()
    runs.chmod(0o500)
    try:
        result = train_in_process(str(tiny_config), "--runs-dir", str(runs))
    finally:
        runs.chmod(0o700)
    assert result.exit_code == 2 and "not writable" in result.output
    assert not any(runs.iterdir())


# ------------------------------------------------------- stateful text_lm, mid-epoch


def test_text_lm_resumes_mid_epoch_with_its_hidden_state(tmp_path):
    """A stateful run (hidden state carried across BPTT windows) stopped mid-epoch and resumed
    in-process gives the uninterrupted run's parameters and metrics exactly."""
    from rnnl2.config import validate_config
    from rnnl2.resume import resume
    from rnnl2.train import Observer, run

    (tmp_path / "text.txt").write_text("the quick brown fox jumps over the lazy dog.\n" * 40)
    raw = {
        "name": "lm",
        "device": "cpu",
        "model": {"hidden_size": 8, "embedding_dim": 4},
        "data": {"kind": "text_lm", "path": str(tmp_path / "text.txt"), "ratios": [0.8, 0.1, 0.1], "bptt": 5},
        "train": {"epochs": 2, "batch_size": 4, "checkpoint_every_steps": 7},
    }
    cfg = validate_config(raw)

    class Crash(Exception):
        pass

    class CrashAt(Observer):
        epoch = 0

        def on_epoch_start(self, epoch, steps):
            self.epoch = epoch

        def on_step(self, step, loss):
            if self.epoch == 2 and step == 10:
                raise Crash

    reference = run(cfg, run_dir=tmp_path / "reference")
    with pytest.raises(Crash):
        run(cfg, run_dir=tmp_path / "crashed", observer=CrashAt())
    resumed = resume(tmp_path / "crashed")
    assert resumed.summary["resumed_from"][0]["step_in_epoch"] > 0
    assert without_timing(resumed.history) == without_timing(reference.history)
    expected, got = final_parameters(tmp_path / "reference"), final_parameters(tmp_path / "crashed")
    assert all(torch.equal(expected[name], got[name]) for name in expected)


# ------------------------------------------ issue 12: every regularizer on, mid-epoch


ALL_REGULARIZERS = {
    "model": {
        "cell": "lstm",
        "hidden_size": 8,
        "embedding_dim": 4,
        "num_layers": 2,
        "dropout": 0.3,
        "input_dropout": 0.2,
        "locked_dropout": True,
        "weight_drop": [0.5, 0.3],
        "embedding_dropout": 0.1,
    },
    "l2": {"lambda": 1e-3},
    "l1": {"lambda": 1e-4},
    "regularization": {"ar": 2.0, "tar": 1.0, "max_norm": {"value": 1.5}},
}


@pytest.mark.parametrize("kind", ["text_lm", "text_classification"])
def test_every_regularizer_resumes_exactly_mid_epoch(tmp_path, kind):
    """Weight-drop, locked and embedding masks come from the saved RNG and the epoch's AR/TAR sums
    from last.pt: stopped mid-epoch and resumed, the run ends as the uninterrupted one (padded
    token sequences, and a stateful LM whose hidden state crosses the per-layer modules)."""
    from rnnl2.config import validate_config
    from rnnl2.resume import resume
    from rnnl2.train import Observer, run

    sentences = ["the quick brown fox", "jumps over", "the lazy dog and the cat", "a b c", "quick quick fox"]
    (tmp_path / "text.txt").write_text(" ".join(sentences * 8) + "\n")
    (tmp_path / "cls.tsv").write_text("".join(f"{i % 2}\t{s}\n" for i, s in enumerate(sentences * 8)))
    data = {
        "text_lm": {"kind": "text_lm", "path": str(tmp_path / "text.txt"), "level": "char", "bptt": 6},
        "text_classification": {
            "kind": "text_classification",
            "path": str(tmp_path / "cls.tsv"),
            **{"format": "tsv", "header": False, "text_field": 1, "label_field": 0},
        },
    }[kind]
    raw = {"name": "all", "device": "cpu", "data": data, **copy.deepcopy(ALL_REGULARIZERS)}
    raw["train"] = {"epochs": 2, "batch_size": 4, "checkpoint_every_steps": 3}
    cfg = validate_config(raw)

    class Crash(Exception):
        pass

    class CrashAt(Observer):
        epoch = 0

        def on_epoch_start(self, epoch, steps):
            self.epoch = epoch

        def on_step(self, step, loss):
            if self.epoch == 2 and step == 5:
                raise Crash

    reference = run(cfg, run_dir=tmp_path / "reference")
    assert {"penalty_l1", "ar", "tar"} <= set(reference.history[-1])
    with pytest.raises(Crash):
        run(cfg, run_dir=tmp_path / "crashed", observer=CrashAt())
    saved = torch.load(tmp_path / "crashed" / "checkpoints" / "last.pt", weights_only=True)["resume"]
    assert 0 < saved["step_in_epoch"] < 5 and saved["activity_sum"].shape == (2,)  # a mid-epoch checkpoint
    resumed = resume(tmp_path / "crashed")
    assert without_timing(resumed.history) == without_timing(reference.history)
    expected, got = final_parameters(tmp_path / "reference"), final_parameters(tmp_path / "crashed")
    assert all(torch.equal(expected[name], got[name]) for name in expected)


# ------------------------------------------- resume trusts last.pt, not the editable files


@pytest.fixture
def killed_run(finished_run) -> tuple[Path, Path]:
    """A run as a kill leaves it: no summary.json, checkpoints after its last epoch."""
    config, run_dir = finished_run
    (run_dir / "summary.json").unlink()
    return config, run_dir


def folder_snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_an_edited_config_yaml_is_refused_listing_the_keys(killed_run):
    _, run_dir = killed_run
    text = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(text.replace("lambda: 0.001", "lambda: 0.05"))
    before = folder_snapshot(run_dir)
    result = train_in_process("--resume", str(run_dir))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "l2.lambda: 0.001 → 0.05" in result.output and "--force --set" in result.output
    assert folder_snapshot(run_dir) == before


def test_an_empty_config_yaml_is_refused(killed_run):
    _, run_dir = killed_run
    (run_dir / "config.yaml").write_text("")
    result = train_in_process("--resume", str(run_dir))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "config.yaml" in result.output


def test_set_on_resume_without_force_is_refused_listing_the_change(killed_run):
    _, run_dir = killed_run
    before = folder_snapshot(run_dir)
    result = train_in_process("--resume", str(run_dir), "--set", "train.epochs=3")
    assert result.exit_code == 2 and "train.epochs: 2 → 3" in result.output
    assert folder_snapshot(run_dir) == before


def test_a_checkpoint_from_another_run_is_refused(killed_run, tmp_path):
    config, run_dir = killed_run
    other = tmp_path / "other"
    assert train_in_process(str(config), "--run-dir", str(other), "-q").exit_code == 0
    (run_dir / "checkpoints" / "last.pt").write_bytes((other / "checkpoints" / "last.pt").read_bytes())
    before = folder_snapshot(run_dir)
    result = train_in_process("--resume", str(run_dir))
    assert result.exit_code == 2 and "belongs to another run" in result.output
    assert folder_snapshot(run_dir) == before


def damage_resume_block(path: Path, damage: str) -> None:
    payload = torch.load(path, weights_only=True)
    if damage == "history_not_a_list":
        payload["resume"]["history"] = {"epoch": 1}
    elif damage == "missing_rng":
        del payload["resume"]["rng"]
    elif damage == "bad_shuffle_state":
        payload["resume"]["shuffle_state"] = torch.zeros(7, dtype=torch.uint8)
    elif damage == "python_rng":
        payload["resume"]["rng"]["python"] = [3, [1, 2], None]
    elif damage == "negative_step":
        payload["resume"]["step_in_epoch"] = -4
    torch.save(payload, path)


@pytest.mark.parametrize(
    "damage", ["history_not_a_list", "missing_rng", "bad_shuffle_state", "python_rng", "negative_step"]
)
def test_a_malformed_resume_block_is_refused_before_anything_is_written(killed_run, damage):
    _, run_dir = killed_run
    damage_resume_block(run_dir / "checkpoints" / "last.pt", damage)
    before = folder_snapshot(run_dir)
    result = train_in_process("--resume", str(run_dir))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "last.pt" in result.output
    assert folder_snapshot(run_dir) == before


def test_a_locked_run_folder_is_refused_naming_the_holder(killed_run, tmp_path):
    from rnnl2.runs import FolderLock

    config, run_dir = killed_run
    with FolderLock(run_dir):
        before = folder_snapshot(run_dir)
        result = train_in_process("--resume", str(run_dir))
        assert result.exit_code == 2 and f"pid {os.getpid()}" in result.output, result.output
        assert folder_snapshot(run_dir) == before
    assert train_in_process("--resume", str(run_dir), "-q").exit_code == 0  # free again once released


def test_two_trainings_into_one_run_dir_the_second_exits_2_at_once(tmp_path):
    config = write_config(tmp_path, RESUMABLE | {"train": {**RESUMABLE["train"], "epochs": 40}})
    first = rnnl2("train", str(config), "--run-dir", str(tmp_path / "x"), "-q")
    deadline = time.monotonic() + 60
    while not (tmp_path / "x" / "config.yaml").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    second = run_rnnl2("train", str(config), "--run-dir", str(tmp_path / "x"), timeout=120)
    first.send_signal(signal.SIGINT)
    first.wait(timeout=60)
    assert second.returncode == 2, second.stderr
    assert f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr


def test_paused_then_resumed_run_equals_unpaused_run(killed_and_resumed, tmp_path):
    """`--pause-after` stops a run after an epoch (status paused, no final evaluation); resumed in
    two more legs it ends where the reference run ended, weight for weight."""
    config = write_config(tmp_path, RESUMABLE)
    paused = tmp_path / "paused"
    finish(rnnl2("train", str(config), "--run-dir", str(paused), "--pause-after", "1", "-q"))
    summary = json.loads((paused / "summary.json").read_text())
    assert (summary["status"], summary["epochs_run"]) == ("paused", 1)
    assert "test_loss" not in summary and summary["resume_with"] == f"rnnl2 train --resume {paused}"
    finish(rnnl2("train", "--resume", str(paused), "--pause-after", "2", "-q"))
    assert json.loads((paused / "summary.json").read_text())["epochs_run"] == 2
    refused = finish(rnnl2("train", "--resume", str(paused), "--pause-after", "2", "-q"), expected=2)
    assert "already trained 2 epochs" in refused
    before = torch.load(paused / "checkpoints" / "last.pt", weights_only=True)["resume"]["wall_seconds"]
    finish(rnnl2("train", "--resume", str(paused), "-q"))
    ended = json.loads((paused / "summary.json").read_text())  # wall time: every leg, and the last alone
    assert 0 < ended["wall_seconds_segment"] < ended["wall_seconds"]
    assert ended["wall_seconds"] == pytest.approx(before + ended["wall_seconds_segment"], abs=1e-9)
    reference = killed_and_resumed["reference"]
    expected, got = final_parameters(reference), final_parameters(paused)
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    assert without_timing(read_metrics(paused)) == without_timing(read_metrics(reference))
    summaries = [json.loads((d / "summary.json").read_text()) for d in (reference, paused)]
    for key in ("status", "best_epoch", "best_value", "steps", "final", "test_loss", "test_accuracy"):
        assert summaries[0][key] == summaries[1][key], key
