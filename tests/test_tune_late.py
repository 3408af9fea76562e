"""tune --scheduler late: the trunk trains λ = 0 until early stopping ends it, each fork is
exactly `rnnl2 fork` of it at its best epoch then `train --resume --force` with its λ, the cost
counts the trunk's epochs once, and an interrupted or damaged tune continues without retraining."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import TINY_TAGGING, write_config
from rnnl2.cli import app
from rnnl2.errors import ConfigError
from rnnl2.runs import read_metrics
from rnnl2.search import tune as tune_module
from rnnl2.search.tune_plan import TuneSpec, plan_tune

pytestmark = pytest.mark.usefixtures("single_thread")

OVERFITS = {
    **TINY_TAGGING,
    "name": "late",
    "data": {**TINY_TAGGING["data"], "num_train": 32, "num_val": 32},
    "model": {"cell": "lstm", "hidden_size": 32},
    "optimizer": {"name": "adam", "lr": 0.03},
    "l2": {"lambda": 0},
    "train": {"epochs": 16, "batch_size": 16},
}
"""32 sequences at a high learning rate: the λ = 0 trunk (patience 2) peaks at epoch 10 of 16 and
stops at 12; the refit trains all 16 epochs, as the config says."""
SPACE = ["--space", "l2.lambda=choice(1e-3,1e-1)", "--sampler", "grid", "--scheduler", "late"]
FORK_EPOCHS = 3


def invoke(*args: object):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def late_tune(config: Path, tune_dir: Path, *extra: object):
    return invoke("tune", config, *SPACE, "--fork-epochs", FORK_EPOCHS, "--tune-dir", tune_dir, "--jobs", 1, *extra)


def val_losses(run_dir: Path) -> list[float]:
    return [row["val_loss"] for row in read_metrics(run_dir)]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("late")
    config = write_config(folder, OVERFITS)
    result = late_tune(config, folder / "tune", "--json")
    assert result.exit_code == 0, result.output
    trials = json.loads((folder / "tune" / "trials.json").read_text())["trials"]
    return {"config": config, "folder": folder, "report": json.loads(result.stdout.splitlines()[-1]), "trials": trials}


def test_each_fork_continues_the_trunk_from_its_best_epoch_with_its_lambda(tuned):
    tune_dir = tuned["folder"] / "tune"
    trunk, *forks = (tune_dir / t["name"] for t in tuned["trials"])
    summary = json.loads((trunk / "summary.json").read_text())
    best = summary["best_epoch"]
    assert summary["status"] == "early_stopped" and best < summary["epochs_run"] < OVERFITS["train"]["epochs"]
    for fork, lam in zip(forks, (1e-3, 1e-1)):
        rows = read_metrics(fork)
        assert rows[:best] == read_metrics(trunk)[:best]  # the trunk's history, as its best.pt saw it
        assert all(row["penalty"] > 0 for row in rows[best:]) and len(rows) <= best + FORK_EPOCHS
        assert f"lambda: {lam}" in (fork / "config.yaml").read_text()
        assert json.loads((fork / "run.json").read_text())["forked_from"]["epoch"] == best


def test_the_choice_its_cost_and_the_refit(tuned, tmp_path):
    """The best fork (λ = 0.1 from the trunk's best epoch) also trains from scratch, as trial 3,
    exactly a plain `rnnl2 train` at that λ; validation prefers the fork, and the choice says so."""
    report, trials = tuned["report"], tuned["trials"]
    best = trials[1]["lineage"][-1]["epoch"]
    trunk, *forks, again = trials
    assert report["epochs_used"] == trunk["epochs"] + sum(t["epochs"] - best for t in forks) + again["epochs"]
    assert report["grid_epochs"] == 3 * OVERFITS["train"]["epochs"]
    assert again["params"] == {"l2.lambda": 0.1} and again["until"] is None and again["epochs"] == 16
    alone = tmp_path / "alone"
    result = invoke("train", tuned["config"], "--set", "l2.lambda=0.1", "--run-dir", alone, "-q")
    assert result.exit_code == 0, result.output
    assert val_losses(alone) == val_losses(tuned["folder"] / "tune" / again["name"])
    chosen = report["selection"]
    assert (chosen["trial"], chosen["overrides"]) == (2, {"l2.lambda": 0.1})  # the fork beats λ = 0.1 from scratch
    assert chosen["lineage_to_best_epoch"][-1] == {"epoch": best, "params": {"l2.lambda": 0.1}, "from": trunk["name"]}
    assert [entry[1] for entry in chosen["ranking"]] == sorted(t["values"][str(t["until"] or 16)] for t in trials)


def test_a_fork_equals_rnnl2_fork_then_train_resume_by_hand(tuned, tmp_path):
    """The scheduler is the documented recipe (docs/search.md, "Late λ"), bit for bit."""
    tune_dir = tuned["folder"] / "tune"
    trunk, fork = tune_dir / tuned["trials"][0]["name"], tune_dir / tuned["trials"][2]["name"]
    by_hand = tmp_path / "by-hand"
    assert invoke("fork", trunk, by_hand).exit_code == 0
    until = tuned["trials"][2]["until"]
    sets = ["--set", "l2.lambda=0.1", "--set", f"train.epochs={until}"]
    result = invoke("train", "--resume", by_hand, "--force", *sets, "-q")
    assert result.exit_code == 0, result.output
    assert val_losses(by_hand) == val_losses(fork)


def test_a_rerun_reads_the_finished_tune_and_trains_nothing(tuned):
    before = {p.name: p.stat().st_mtime_ns for p in (tuned["folder"] / "tune").glob("trial-*/metrics.jsonl")}
    result = late_tune(tuned["config"], tuned["folder"] / "tune", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["trained_now"] == 0
    assert before == {p.name: p.stat().st_mtime_ns for p in (tuned["folder"] / "tune").glob("trial-*/metrics.jsonl")}


def test_a_tune_stopped_before_its_forks_continues_to_the_same_result(tuned, tmp_path, monkeypatch):
    """Ctrl-C once the trunk is done; then one fork's folder is there already (a driver killed
    right after forking it) and another's holds junk: the rerun resumes the first, sets the junk
    aside and forks again, and ends where the unbroken tune did."""
    config = write_config(tmp_path, OVERFITS)
    train = tune_module.Tuner.train

    def stop_at_the_forks(self, todo):
        if todo[0].number > 0:
            raise KeyboardInterrupt
        return train(self, todo)

    monkeypatch.setattr(tune_module.Tuner, "train", stop_at_the_forks)
    assert late_tune(config, tmp_path / "tune").exit_code == 130
    monkeypatch.undo()
    trunk, first, second = (tmp_path / "tune" / t["name"] for t in tuned["trials"][:3])
    assert not first.exists() and not second.exists()
    assert invoke("fork", trunk, first).exit_code == 0
    second.mkdir()
    (second / "stray.txt").write_text("not a fork")
    result = late_tune(config, tmp_path / "tune", "--json")
    assert result.exit_code == 0, result.output
    assert "kept its unfinished attempt in" in result.output and "forking it again" in result.output
    assert (second.with_name(f"{second.name}.failed-1") / "stray.txt").is_file()
    for mine, unbroken in zip((first, second), tuned["trials"][1:3]):
        assert val_losses(mine) == val_losses(tuned["folder"] / "tune" / unbroken["name"])
    assert json.loads(result.stdout.splitlines()[-1])["selection"]["trial"] == tuned["report"]["selection"]["trial"]
    assert val_losses(tmp_path / "tune" / tuned["trials"][3]["name"]) == val_losses(
        tuned["folder"] / "tune" / tuned["trials"][3]["name"]
    )


def test_a_trunk_still_improving_at_its_end_leaves_nothing_to_fork(tmp_path):
    config = write_config(tmp_path, {**OVERFITS, "optimizer": {"name": "adam", "lr": 0.003}})
    result = late_tune(config, tmp_path / "tune", "--max-epochs", 2, "--fork-epochs", 1)
    assert result.exit_code == 0, result.output
    assert "still improving at its last epoch (2): no fork has epochs left" in result.output
    assert [p.name for p in (tmp_path / "tune").glob("trial-*")] == ["trial-0000-l2.lambda=0"]


def test_a_tune_that_keeps_the_trunk_says_a_grid_is_the_check(tmp_path):
    config = write_config(tmp_path, OVERFITS)
    result = invoke(
        "tune", config, "--space", "l2.lambda=choice(1e-9)", *SPACE[2:], "--fork-epochs", 1, "--no-refit",
        "--tune-dir", tmp_path / "tune", "--jobs", 1,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "selected trial 0 " in result.output and "no fork beat the trunk" in result.output
    assert "only a grid from scratch can tell" in result.output and "no fork or refit" not in result.output


def test_when_every_fork_ties_the_trunk_the_earliest_is_refit(tmp_path):
    config = write_config(tmp_path, OVERFITS)
    space = "l2.lambda=choice(1e-9,1e-8)"  # too small to move the trunk's best within one epoch
    result = invoke(
        "tune", config, "--space", space, *SPACE[2:], "--fork-epochs", 1, "--tune-dir", tmp_path / "tune",
        "--jobs", 1, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    trials = json.loads((tmp_path / "tune" / "trials.json").read_text())["trials"]
    trunk_best = min(val_losses(tmp_path / "tune" / trials[0]["name"]))
    assert [min(val_losses(tmp_path / "tune" / t["name"])) for t in trials[1:3]] == [trunk_best, trunk_best]
    refit = trials[3]
    assert refit["params"] == {"l2.lambda": 1e-9} and refit["lineage"] == [
        {"epoch": 0, "params": {"l2.lambda": 1e-9}, "from": None}
    ]
    assert len(val_losses(tmp_path / "tune" / refit["name"])) == OVERFITS["train"]["epochs"]


def test_the_plan_names_the_trunk_the_forks_and_the_refit(tmp_path):
    config = write_config(tmp_path, OVERFITS)
    result = late_tune(config, tmp_path / "tune", "--dry-run")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"# tune {tmp_path / 'tune'}: a trunk and 2 forks (grid, late), val_loss (min)"
    assert "until early stopping ends it (patience 2)" in lines[1]
    assert (
        lines[3]
        == "# then the best fork's values from scratch, to epoch 16 (the earliest fork when none beats the trunk)"
    )
    assert lines[4] == "# at most 38 epochs (79% of 48 for every value to the end)"  # 16 + 2 × 3 + 16
    assert lines[5].startswith("rnnl2 train ") and "--set train.early_stopping.patience=2" in lines[5]
    assert not (tmp_path / "tune").exists()
    alone = late_tune(config, tmp_path / "tune", "--dry-run", "--no-refit", "--trunk-patience", 3).stdout.splitlines()
    assert "(patience 3)" in alone[1] and alone[3] == "# at most 22 epochs (46% of 48 for every value to the end)"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sampler": "tpe"}, "use --sampler grid or random"),
        ({"scheduler": "halving", "fork_epochs": 2}, "add --scheduler late"),
        ({"min_epochs": 2}, "late forks at the trunk's best epoch"),
        ({"fork_epochs": 16}, "give 1 to --max-epochs − 1 (15)"),
        ({"scheduler": "halving", "refit": False}, "add --scheduler late"),
    ],
)
def test_what_late_refuses(tmp_path, change, message):
    config = write_config(tmp_path, OVERFITS)
    spec = {"fixed": [], "sampler": "grid", "scheduler": "late"} | change
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_tune(TuneSpec(config, ["l2.lambda=choice(1e-3,1e-1)"], **spec), tmp_path / "runs")
