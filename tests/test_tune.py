"""tune: planning (rungs, defaults, the grid, bad input), one real halving run end to end (a
promoted trial equals an unpaused run bit for bit, a rerun trains nothing, compare and report
read the folder), an interrupted tune continuing, and TPE through Optuna's study file."""

from __future__ import annotations

import copy
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from helpers import TINY_TAGGING, write_config
from rnnl2.cli import app
from rnnl2.errors import ConfigError
from rnnl2.launch import Launch
from rnnl2.runs import read_metrics
from rnnl2.search.tune import run_tune
from rnnl2.search.tune_outputs import load_trials
from rnnl2.search.tune_plan import TuneSpec, plan_tune

pytestmark = pytest.mark.usefixtures("single_thread")

# A step schedule (the rate halves after epoch 1) and dropout: a trial resumed after its pause
# has to bring back the scheduler and every RNG state to match a run that never paused.
TUNABLE = copy.deepcopy(TINY_TAGGING) | {
    "name": "tunable",
    "model": {"cell": "lstm", "hidden_size": 8, "dropout": 0.2, "num_layers": 2},
    "optimizer": {"name": "adam", "lr": 0.02, "scheduler": {"name": "step", "step_size": 1, "gamma": 0.5}},
    "train": {"epochs": 2, "batch_size": 16},
}
LAMBDA = "l2.lambda=0|loguniform(1e-5,1e-1)"
HALVING = ["--eta", "2", "--min-epochs", "1", "--max-epochs", "2", "--jobs", "1", "--threads", "1"]


def tune_args(config: Path, folder: Path, *extra: str) -> list[str]:
    return ["tune", str(config), "--space", LAMBDA, "--tune-dir", str(folder), *HALVING, *extra]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> dict:
    """One real tune: 4 random trials, rungs at epochs 1 and 2, the best 2 resumed to the end."""
    folder = tmp_path_factory.mktemp("tune")
    config = write_config(folder, TUNABLE)
    result = CliRunner().invoke(app, tune_args(config, folder / "tune", "--trials", "4", "--json"))
    assert result.exit_code == 0, result.output
    return {"config": config, "folder": folder, "tune_dir": folder / "tune", "report": json.loads(result.stdout)}


# ------------------------------------------------------------------------------ planning


def test_rungs_default_past_the_first_multistep_milestone(tmp_path):
    raw = TUNABLE | {"optimizer": {"name": "sgd", "lr": 0.5, "scheduler": {"name": "multistep", "milestones": [2, 4]}}}
    config = write_config(tmp_path, raw | {"train": {"epochs": 6}})
    plan = plan_tune(TuneSpec(config, [LAMBDA], trials=9))
    assert plan.rungs == [3, 6] and "first learning-rate decay" in plan.min_epochs_reason
    assert plan.tune_dir.parent == Path("runs") / "tunable" and plan.tune_dir.name.startswith("tune-")
    assert plan_tune(TuneSpec(config, [LAMBDA], trials=9, max_epochs=30, eta=3)).rungs == [3, 9, 27, 30]
    assert plan_tune(TuneSpec(config, [LAMBDA], trials=9, min_epochs=6)).rungs == [6]  # no halving
    again = plan_tune(TuneSpec(config, [LAMBDA], trials=20))
    assert again.tune_dir == plan.tune_dir  # more trials continue the same tune


def test_the_first_rung_can_be_placed_past_a_baseline_runs_best_epoch(tmp_path):
    config = write_config(tmp_path, TUNABLE | {"train": {"epochs": 9, "batch_size": 16}})
    baseline = tmp_path / "baseline"
    (baseline).mkdir()
    (baseline / "summary.json").write_text(json.dumps({"status": "early_stopped", "best_epoch": 3}))
    plan = plan_tune(TuneSpec(config, [LAMBDA], trials=9, eta=2, first_rung_from=baseline))
    assert plan.rungs == [4, 8, 9] and "best epoch (3)" in plan.min_epochs_reason
    (baseline / "summary.json").write_text(json.dumps({"status": "paused", "best_epoch": 3}))
    for spec in (
        TuneSpec(config, [LAMBDA], trials=9, first_rung_from=baseline),  # not finished
        TuneSpec(config, [LAMBDA], trials=9, first_rung_from=tmp_path / "nowhere"),
        TuneSpec(config, [LAMBDA], trials=9, first_rung_from=baseline, min_epochs=2),
    ):
        with pytest.raises(ConfigError, match="first-rung-from"):
            plan_tune(spec)


def test_grid_plans_every_point_and_refuses_another_count(tiny_config):
    spaces = ["l2.lambda=0|loguniform(1e-4,1e-2)", "l2.mode=choice(penalty,decoupled)"]
    assert plan_tune(TuneSpec(tiny_config, spaces, sampler="grid", grid_points=3)).trials == 8
    with pytest.raises(ConfigError, match="all 8 grid points"):
        plan_tune(TuneSpec(tiny_config, spaces, sampler="grid", grid_points=3, trials=5))
    with pytest.raises(ConfigError, match="needs --trials"):
        plan_tune(TuneSpec(tiny_config, spaces))


def test_dry_run_prints_the_plan_and_first_commands_and_makes_no_folder(tiny_config, tmp_path):
    args = ["tune", str(tiny_config), "--space", LAMBDA, "--trials", "9", "--max-epochs", "9", "--eta", "3"]
    result = CliRunner().invoke(app, [*args, "--runs-dir", str(tmp_path / "runs"), "--dry-run"])
    assert result.exit_code == 0, result.output
    comments = [l for l in result.stdout.splitlines() if l.startswith("#")]
    commands = [shlex.split(l) for l in result.stdout.splitlines() if not l.startswith("#")]
    assert "rungs at epochs 1, 3, 9" in "\n".join(comments) and "at most 21 epochs (26% of 81" in "\n".join(comments)
    assert len(commands) == 9 and all(c[c.index("--pause-after") + 1] == "1" for c in commands)
    assert all("train.epochs=9" in c for c in commands)  # the schedule runs over max-epochs
    again = CliRunner().invoke(app, [*args, "--runs-dir", str(tmp_path / "runs"), "--dry-run"])
    assert again.stdout == result.stdout  # seeded: the same trials
    tpe = CliRunner().invoke(app, [*args, "--runs-dir", str(tmp_path / "runs"), "--dry-run", "--sampler", "tpe"])
    if "needs Optuna" not in tpe.output:  # tpe starts with the random sampler's trials

        def sets(text: str) -> list[list[str]]:
            return [[a for a in shlex.split(l) if "=" in a][:2] for l in text.splitlines() if not l.startswith("#")]

        assert sets(tpe.stdout) == sets(result.stdout)
    assert not (tmp_path / "runs").exists()


def test_help_and_dry_run_import_neither_torch_nor_optuna(tiny_config):
    probe = (
        "import sys\nfrom rnnl2.cli import app\ntry:\n    app(sys.argv[1:], standalone_mode=False)\n"
        "except SystemExit:\n    pass\n"
        "print('HEAVY:' + ','.join(m for m in ('torch', 'numpy', 'optuna') if m in sys.modules))"
    )
    dry = ["tune", str(tiny_config), "--space", LAMBDA, "--trials", "3", "--sampler", "tpe", "--dry-run"]
    for args in (["tune", "--help"], dry):
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "HEAVY:", done.stdout + done.stderr


@pytest.mark.parametrize(
    "space, message",
    [
        ("l2.lamda=loguniform(1e-5,1e-1)", "lamda"),
        ("l2.lambda=uniform(-1,1)", "l2.lambda"),
        ("l2.lambda=loguniform(0,1)", "0 < a < b"),
        ("train.epochs=int(1,3)", "--max-epochs"),
    ],
)
def test_a_bad_space_exits_2_before_any_folder(tiny_config, tmp_path, space, message):
    result = CliRunner().invoke(
        app, ["tune", str(tiny_config), "--space", space, "--trials", "2", "--runs-dir", str(tmp_path / "runs")]
    )
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_tpe_without_optuna_says_how_to_install_it(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    result = CliRunner().invoke(
        app,
        [
            "tune",
            str(tiny_config),
            "--space",
            LAMBDA,
            "--trials",
            "2",
            "--sampler",
            "tpe",
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
    )
    assert result.exit_code == 2 and "pip install 'rnnl2[tune]'" in result.output
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------ a real tune


def test_halving_trains_the_best_half_to_the_end_and_writes_its_outputs(tuned):
    report, tune_dir = tuned["report"], tuned["tune_dir"]
    trials = load_trials(tune_dir)
    assert sorted(t.state for t in trials) == ["completed", "completed", "stopped", "stopped"]
    assert all(t.values[1] is not None for t in trials)
    went_on = sorted(trials, key=lambda t: t.values[1])[:2]
    assert {t.state for t in went_on} == {"completed"} and all(t.epochs == 2 for t in went_on)
    assert (report["epochs_used"], report["grid_epochs"], report["trained_now"]) == (6, 8, 6)
    stopped = next(t for t in trials if t.state == "stopped")
    assert json.loads((tune_dir / stopped.name / "summary.json").read_text())["status"] == "paused"
    selection = report["selection"]
    best = min((t for t in trials if t.state == "completed"), key=lambda t: t.values[2])
    assert (
        selection["trial"] == best.number and selection["mean"] == best.values[2] and "test_loss" in selection["test"]
    )
    assert (tune_dir / "best.yaml").read_text() == (tune_dir / best.name / "config.yaml").read_text()
    assert len((tune_dir / "trials.csv").read_text().splitlines()) == 5
    assert {p.name for p in (tune_dir / "figures").iterdir()} == {"rung-1.png", "rung-2.png"}


def test_a_promoted_trial_equals_an_unpaused_run_bit_for_bit(tuned, tmp_path):
    trial = next(t for t in load_trials(tuned["tune_dir"]) if t.state == "completed")
    paused = tuned["tune_dir"] / trial.name
    assert json.loads((paused / "summary.json").read_text())["resumed_from"][0]["epoch"] == 1
    reference = tmp_path / "reference"
    result = CliRunner().invoke(
        app, ["train", str(paused / "config.yaml"), "--run-dir", str(reference), "--threads", "1", "-q"]
    )
    assert result.exit_code == 0, result.output

    def timeless(rows):
        return [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")} for r in rows]

    assert timeless(read_metrics(paused)) == timeless(read_metrics(reference))
    got, expected = (torch.load(d / "checkpoints" / "last.pt", weights_only=True)["model"] for d in (paused, reference))
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    summaries = [json.loads((d / "summary.json").read_text()) for d in (paused, reference)]
    assert {k: v for k, v in summaries[0].items() if k.startswith("test_")} == {
        k: v for k, v in summaries[1].items() if k.startswith("test_")
    }


def test_rerunning_a_finished_tune_trains_nothing_and_picks_the_same_best(tuned):
    tune_dir = tuned["tune_dir"]
    stamps = {p: p.stat().st_mtime_ns for p in tune_dir.glob("trial-*/summary.json")}
    result = CliRunner().invoke(app, tune_args(tuned["config"], tune_dir, "--trials", "4"))
    assert result.exit_code == 0, result.output
    assert "start trial" not in result.output and "resume trial" not in result.output
    again = CliRunner().invoke(app, tune_args(tuned["config"], tune_dir, "--trials", "4", "--json"))
    assert json.loads(again.stdout)["trained_now"] == 0
    assert {p: p.stat().st_mtime_ns for p in tune_dir.glob("trial-*/summary.json")} == stamps
    assert json.loads((tune_dir / "selection.json").read_text()) == tuned["report"]["selection"]
    assert result.stdout.strip().splitlines()[-1] == str(tune_dir)
    other = CliRunner().invoke(app, tune_args(tuned["config"], tune_dir, "--trials", "4", "--eta", "3"))
    assert other.exit_code == 2 and "holds a different tune" in other.output and "eta" in other.output
    respelled = tune_args(tuned["config"], tune_dir, "--trials", "4", "--json")
    respelled[respelled.index(LAMBDA)] = "l2.lambda = 0.0 | loguniform(0.00001, 0.1)"  # the same space
    same = CliRunner().invoke(app, respelled)
    assert same.exit_code == 0, same.output
    assert json.loads(same.stdout)["trained_now"] == 0
    assert json.loads((tune_dir / "tune.json").read_text())["spaces"] == [LAMBDA]  # the folder's spelling stays
    wider = CliRunner().invoke(app, [*respelled[:3], "l2.lambda=0|loguniform(1e-6,1e-1)", *respelled[4:]])
    assert wider.exit_code == 2 and "holds a different tune" in wider.output


def test_compare_and_report_read_a_tune_folder(tuned, tmp_path):
    compared = CliRunner().invoke(app, ["compare", str(tuned["tune_dir"]), "--json"])
    assert compared.exit_code == 0, compared.output
    rows = json.loads(compared.stdout)["rows"]
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed", "paused"}
    assert json.loads(compared.stdout)["keys"] == ["l2.lambda"]  # trials differ only in what was searched
    written = CliRunner().invoke(app, ["report", str(tuned["tune_dir"]), "--output", str(tmp_path / "report")])
    assert written.exit_code == 0, written.output
    assert (tmp_path / "report" / "report.md").is_file()


def test_an_interrupted_tune_continues_from_its_folders_and_retrains_nothing(tmp_path):
    config = write_config(tmp_path, TUNABLE)
    spec = TuneSpec(config, [LAMBDA], trials=4, eta=2, min_epochs=1, max_epochs=2)
    plan = plan_tune(spec, tune_dir=tmp_path / "tune")

    def stop_at_the_first_decision(kind: str, info: dict) -> None:  # Ctrl-C right after rung 0
        if kind in ("promoted", "stopped"):
            raise KeyboardInterrupt

    first = run_tune(plan, Launch(threads=1), stop_at_the_first_decision)
    assert first.interrupted and sorted(t.state for t in first.trials) == ["promoted"] * 2 + ["stopped"] * 2
    stamps = {t.name: (plan.tune_dir / t.name / "summary.json").stat().st_mtime_ns for t in first.trials}
    ahead, behind = [t for t in first.trials if t.state == "promoted"]
    # `ahead` got to the end while no driver watched (as if the driver died before reading it)
    resumed = CliRunner().invoke(app, ["train", "--resume", str(plan.tune_dir / ahead.name), "--threads", "1", "-q"])
    assert resumed.exit_code == 0, resumed.output
    events = []
    second = run_tune(plan, Launch(threads=1), lambda kind, info: events.append((kind, info)))
    assert not second.interrupted and sorted(t.state for t in second.trials) == ["completed"] * 2 + ["stopped"] * 2
    starts = [info for kind, info in events if kind == "start"]
    assert [(i["name"], i["resume"], i["epoch"]) for i in starts] == [(behind.name, True, 2)]
    assert [info["name"] for kind, info in events if kind == "skip"] == [ahead.name]
    for trial in second.trials:
        if trial.state == "stopped":
            assert (plan.tune_dir / trial.name / "summary.json").stat().st_mtime_ns == stamps[trial.name]
    assert second.epochs_used == 6 and second.selection["trial"] in (ahead.number, behind.number)


def test_tpe_keeps_its_study_in_the_tune_folder_and_hears_every_rung(tmp_path):
    optuna = pytest.importorskip("optuna")
    config = write_config(tmp_path, TUNABLE)
    args = tune_args(config, tmp_path / "tune", "--trials", "2", "--sampler", "tpe", "--json")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    tune_dir = tmp_path / "tune"
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tune_dir / "study.journal"))
    )
    study = optuna.load_study(study_name=json.loads((tune_dir / "tune.json").read_text())["study"], storage=storage)
    by_number = {t.optuna["number"]: t for t in load_trials(tune_dir)}
    states = {}
    for frozen in study.trials:
        ours = by_number[frozen.number]
        states[frozen.state.name] = ours.state
        assert frozen.intermediate_values[1] == ours.values[1]
        assert all(frozen.user_attrs[key] == value for key, value in ours.params.items())
        if ours.state == "completed":
            assert frozen.value == ours.values[2]
    assert states == {"COMPLETE": "completed", "PRUNED": "stopped"}
    best = study.best_trial.user_attrs["l2.lambda"]  # λ = 0 included, which `best_params` holds as a pick
    assert best == json.loads((tune_dir / "selection.json").read_text())["overrides"]["l2.lambda"]
    again = CliRunner().invoke(app, args)  # finished: no trial is asked again
    assert again.exit_code == 0 and len(optuna.load_study(study_name=study.study_name, storage=storage).trials) == 2


def test_hyperband_runs_one_bracket_of_trials_to_the_end(tmp_path):
    config = write_config(tmp_path, TUNABLE)
    args = tune_args(config, tmp_path / "tune", "--trials", "5", "--scheduler", "hyperband", "--json")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    trials = load_trials(tmp_path / "tune")
    brackets = {b: [t for t in trials if t.bracket == b] for b in {t.bracket for t in trials}}
    assert sorted(brackets) == [0, 1] and sum(map(len, brackets.values())) == 5
    assert all(t.state == "completed" and t.epochs == 2 and set(t.values) == {2} for t in brackets[1])
    assert sorted(t.state for t in brackets[0]).count("completed") == 1  # halved at epoch 1
    data = json.loads(result.stdout)
    planned = CliRunner().invoke(app, [*args[:-1], "--dry-run"])
    assert f"at most {data['epochs_used']} epochs" in planned.stdout and "from epoch 2" in planned.stdout
    other = CliRunner().invoke(app, tune_args(config, tmp_path / "tune", "--trials", "5"))
    assert other.exit_code == 2 and "scheduler: 'hyperband' there, None now" in other.output.replace("\n", " ")
