"""tune --scheduler pbt: the pure decisions (intervals, who copies whom, perturbation), the copy of
a member's folder being exact (a copy resumed equals the original resumed, bit for bit), a real
population through the CLI (λ schedules and lineage in trials.csv and summary.json, a rerun
trains nothing), and a driver SIGKILLed at a copy recovering on rerun to the same result."""

from __future__ import annotations

import copy
import json
import random
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from helpers import TINY_TAGGING, metrics_without_timing, rnnl2_argv, write_config
from rnnl2.cli import app
from rnnl2.errors import ConfigError, Rnnl2Error
from rnnl2.search.halving import Trial
from rnnl2.search.pbt import FACTORS, copy_member, decide, interval_epochs, perturb, quantile_count
from rnnl2.search.space import parse_space
from rnnl2.search.tune_outputs import trained_by
from rnnl2.search.tune_lines import epoch_budget
from rnnl2.search.tune_plan import TuneSpec, plan_tune
from test_tune_recovery import ENV, trials_json, wait_until

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIG = copy.deepcopy(TINY_TAGGING) | {
    "name": "pbt",
    "optimizer": {"name": "adam", "lr": 0.02},
    "train": {"epochs": 3, "batch_size": 16},
}
SPACE = "l2.lambda=loguniform(1e-5,1e-1)"


def pbt_argv(config: Path, folder: Path, *extra: str) -> list[str]:
    return [
        "tune", str(config), "--space", SPACE, "--scheduler", "pbt", "--perturb-epochs", "1",
        "--trials", "4", "--tune-dir", str(folder), "--jobs", "1", "--threads", "1", *extra,
    ]  # fmt: skip


# ------------------------------------------------------------------------------ decisions


def test_intervals_and_how_many_copy():
    assert interval_epochs(2, 7) == [2, 4, 6, 7] and interval_epochs(3, 3) == [3]
    assert [quantile_count(n) for n in (1, 2, 3, 4, 8, 16)] == [0, 1, 1, 1, 2, 4]


def test_perturb_scales_keeps_bounds_and_resamples_sometimes():
    space = parse_space("l2.lambda=0|loguniform(1e-5,1e-1)")
    rng = random.Random(0)
    draws = [perturb({"l2.lambda": 1e-3}, [space], rng)["l2.lambda"] for _ in range(400)]
    scaled = [v for v in draws if any(abs(v - 1e-3 * f) < 1e-12 for f in FACTORS)]
    assert 0.6 < len(scaled) / len(draws) < 0.9  # a quarter are drawn afresh
    assert all(v == 0 or 1e-5 <= v <= 1e-1 for v in draws)
    top = [perturb({"l2.lambda": 0.1}, [space], rng)["l2.lambda"] for _ in range(50)]
    assert max(top) <= 0.1  # ×1.25 at the upper bound stays in the space
    layers = parse_space("model.num_layers=int(1,3)")
    assert {perturb({"model.num_layers": 3}, [layers], rng)["model.num_layers"] for _ in range(50)} <= {1, 2, 3}


def members(values: list[float | None], states: list[str] | None = None) -> list[Trial]:
    out = []
    for n, value in enumerate(values):
        trial = Trial(n, f"t{n}", {"l2.lambda": 10.0 ** -(n + 2)}, 0, state=(states or ["paused"] * len(values))[n])
        trial.values[2] = value
        trial.lineage = [{"epoch": 0, "params": dict(trial.params), "from": None}]
        out.append(trial)
    return out


def test_the_worst_quarter_copies_the_best_quarter_and_the_decision_repeats():
    population = members([0.5, 0.9, 0.2, 0.7, 0.4, 0.8, 0.3, 0.6])
    space = [parse_space(SPACE)]
    events = decide(population, 0, [2, 4], "min", space, seed=0)
    copied = {t.name: t.pending["from"] for kind, t in events if kind == "exploited"}
    assert set(copied) == {"t1", "t5"} and set(copied.values()) <= {"t2", "t6"}  # worst two take the best two
    assert all(t.rung == 1 and t.state == "promoted" for t in population)
    again = members([0.5, 0.9, 0.2, 0.7, 0.4, 0.8, 0.3, 0.6])
    decide(again, 0, [2, 4], "min", space, seed=0)
    assert [t.params for t in again] == [t.params for t in population]  # seeded by the tune and epoch
    t1 = population[1]
    donor = next(t for t in population if t.name == t1.pending["from"])
    assert t1.lineage == [*donor.lineage, {"epoch": 2, "from": donor.name, "params": t1.params}]
    assert decide(population, 0, [2, 4], "min", space, seed=0) == []  # decided: nothing changes


def test_a_member_that_ended_or_failed_takes_no_part():
    population = members([0.5, None, 0.2, 0.9], ["paused", "failed", "paused", "completed"])
    events = decide(population, 0, [2, 4], "max", [parse_space(SPACE)], seed=0)
    assert [(kind, t.name) for kind, t in events] == [("promoted", "t0"), ("exploited", "t2")]  # max: 0.2 is worse
    assert population[2].pending["from"] == "t0" and population[3].state == "completed"


def test_planning_a_population(tiny_config):
    plan = plan_tune(TuneSpec(tiny_config, [SPACE], trials=8, scheduler="pbt", perturb_epochs=2, max_epochs=7))
    assert plan.rungs == [2, 4, 6, 7] and epoch_budget(plan) == 56
    assert plan.definition["population"] == 8 and plan.definition["perturb_epochs"] == 2
    assert plan_tune(TuneSpec(tiny_config, [SPACE], trials=8, scheduler="pbt", max_epochs=10)).rungs == [2, 4, 6, 8, 10]
    bigger = plan_tune(TuneSpec(tiny_config, [SPACE], trials=9, scheduler="pbt", perturb_epochs=2, max_epochs=7))
    assert bigger.tune_dir != plan.tune_dir  # a population does not grow: another tune
    for spec, message in [
        (TuneSpec(tiny_config, [SPACE], trials=4, scheduler="pbt", sampler="tpe"), "random or on a grid"),
        (TuneSpec(tiny_config, [SPACE], trials=4, perturb_epochs=2), "add --scheduler pbt"),
        (TuneSpec(tiny_config, [SPACE], trials=4, scheduler="pbt", min_epochs=1), "--perturb-epochs"),
        (TuneSpec(tiny_config, [SPACE], trials=4, scheduler="pbt", perturb_epochs=9, max_epochs=3), "1 to --max"),
    ]:
        with pytest.raises(ConfigError, match=message):
            plan_tune(spec)


# ------------------------------------------------------------------------------ the copy


def train(argv: list[str]) -> None:
    result = CliRunner().invoke(app, ["train", *argv, "--quiet", "--threads", "1"])
    assert result.exit_code == 0, result.output


def test_a_copied_member_resumed_equals_its_donor_resumed_bit_for_bit(tmp_path):
    """Dropout on: the copy must carry the weights, the optimizer's moments and every RNG state."""
    raw = CONFIG | {"model": {"cell": "lstm", "hidden_size": 8, "dropout": 0.3, "num_layers": 2}}
    config = write_config(tmp_path, raw)
    donor, recipient = tmp_path / "donor", tmp_path / "recipient"
    train([str(config), "--run-dir", str(donor), "--pause-after", "1"])
    train([str(config), "--set", "l2.lambda=0.05", "--run-dir", str(recipient), "--pause-after", "1"])
    copy_member(donor, recipient, 1, [{"epoch": 1, "from": "donor", "params": {}}])
    a = torch.load(donor / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(recipient / "checkpoints" / "last.pt", weights_only=False)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    train(["--resume", str(donor)])
    train(["--resume", str(recipient), "--force", "--set", "l2.lambda=1e-3"])  # the donor's own λ: no change
    assert metrics_without_timing(recipient) == metrics_without_timing(donor)
    assert json.loads((recipient / "summary.json").read_text())["lineage"][0]["from"] == "donor"
    with pytest.raises(Rnnl2Error, match="paused at epoch 1"):  # a finished donor is not copied
        copy_member(donor, recipient, 1, [])


def test_a_copy_killed_between_its_two_renames_is_redone(tmp_path):
    config = write_config(tmp_path, CONFIG)
    donor, recipient = tmp_path / "donor", tmp_path / "recipient"
    train([str(config), "--run-dir", str(donor), "--pause-after", "1"])
    train([str(config), "--set", "l2.lambda=0.05", "--run-dir", str(recipient), "--pause-after", "1"])
    recipient.rename(tmp_path / ".recipient.replaced")  # the first rename done, the second not
    (tmp_path / ".recipient.exploit").mkdir()  # and a half-built copy
    copy_member(donor, recipient, 1, [])
    assert metrics_without_timing(recipient) == metrics_without_timing(donor) and sorted(
        p.name for p in tmp_path.iterdir()
    ) == [
        "donor",
        "recipient",
        "tiny.yaml",
    ]


def test_the_values_that_trained_a_best_epoch_come_from_the_lineage(tmp_path):
    """Copied at epoch 2 with λ 5e-3, best at epoch 2: its weights were trained with λ 5e-4 (the
    donor's start); best at epoch 3, they had one epoch at 5e-3 after the copy."""
    trial = Trial(number=1, name="t1", params={"l2.lambda": 5e-3}, bracket=0)
    trial.lineage = [{"epoch": 0, "params": {"l2.lambda": 5e-4}, "from": None}]
    trial.lineage.append({"epoch": 2, "params": {"l2.lambda": 5e-3}, "from": "t0"})
    for best, expected in [(2, 5e-4), (3, 5e-3)]:
        (tmp_path / "summary.json").write_text(json.dumps({"best_epoch": best}))
        found = trained_by(trial, tmp_path)
        assert found["params_at_best_epoch"] == {"l2.lambda": expected} and found["best_epoch"] == best
    trial.lineage = trial.lineage[:1]  # never copied: its values are best.yaml's
    assert trained_by(trial, tmp_path) == {}


# ------------------------------------------------------------------------------ through the CLI


@pytest.fixture(scope="module")
def population(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("pbt")
    config = write_config(folder, CONFIG)
    result = CliRunner().invoke(app, [*pbt_argv(config, folder / "T"), "--json"])
    assert result.exit_code == 0, result.output
    return {"config": config, "tune_dir": folder / "T", "report": json.loads(result.stdout)}


def test_a_population_trains_every_member_to_the_end_copying_at_each_interval(population):
    tune_dir, report = population["tune_dir"], population["report"]
    assert report["rungs"] == [1, 2, 3] and report["states"] == {"completed": 4} and report["epochs_used"] == 12
    trials = json.loads((tune_dir / "trials.json").read_text())["trials"]
    copied = [t for t in trials if len(t["lineage"]) > 1]
    assert copied, "one member copies another at each of the two intervals"
    by_name = {t["name"]: t for t in trials}
    for trial in copied:
        entry = trial["lineage"][-1]
        if any(e["epoch"] > entry["epoch"] for e in by_name[entry["from"]]["lineage"]):
            continue  # the donor took another's folder since: its past changed
        run_dir = tune_dir / trial["name"]
        donor = metrics_without_timing(tune_dir / entry["from"])
        assert metrics_without_timing(run_dir)[: entry["epoch"]] == donor[: entry["epoch"]]  # the donor's past, exactly
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["lineage"] == trial["lineage"] and summary["status"] == "completed"
        saved = (run_dir / "config.yaml").read_text()
        assert f"lambda: {trial['params']['l2.lambda']}" in saved  # it finished with its own last λ
    header, *rows = (tune_dir / "trials.csv").read_text().splitlines()
    assert "l2.lambda schedule" in header and any(" → " in row for row in rows)


def test_the_selection_says_which_values_trained_the_chosen_weights(population):
    """A member's best epoch may predate its last copy: for every copied member the values in
    effect up to its best epoch are read from its lineage; selection.json carries them for a
    copied winner only."""
    tune_dir = population["tune_dir"]
    selection = json.loads((tune_dir / "selection.json").read_text())
    trials = json.loads((tune_dir / "trials.json").read_text())["trials"]
    winner = next(t for t in trials if t["number"] == selection["trial"])
    assert ("params_at_best_epoch" in selection) == (len(winner["lineage"]) > 1)
    assert selection["overrides"] == winner["params"]
    copied = [t for t in trials if len(t["lineage"]) > 1]
    for trial in copied:
        best = json.loads((tune_dir / trial["name"] / "summary.json").read_text())["best_epoch"]
        found = trained_by(Trial.from_json(trial), tune_dir / trial["name"])
        before = [e for e in trial["lineage"] if e["epoch"] < best]
        assert found["best_epoch"] == best and found["params_at_best_epoch"] == before[-1]["params"]
    assert copied


def test_a_population_rerun_trains_nothing(population):
    result = CliRunner().invoke(app, [*pbt_argv(population["config"], population["tune_dir"]), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["trained_now"] == 0


def test_a_driver_killed_at_a_copy_recovers_to_the_same_population(tmp_path, population):
    write_config(tmp_path, CONFIG)
    argv = rnnl2_argv(*pbt_argv(tmp_path / "tiny.yaml", tmp_path / "T", "--quiet"))
    driver = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    wait_until(lambda: any(t.get("pending") for t in trials_json(tmp_path)), driver)
    driver.send_signal(signal.SIGKILL)
    driver.communicate(timeout=60)
    rerun = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=240)
    assert rerun.returncode == 0, rerun.stderr
    ours, theirs = (
        json.loads((d / "trials.json").read_text())["trials"] for d in (tmp_path / "T", population["tune_dir"])
    )
    keys = ("name", "params", "values", "lineage", "state", "epochs", "metrics")
    assert [{k: t[k] for k in keys} for t in ours] == [{k: t[k] for k in keys} for t in theirs]
    assert not [p for p in (tmp_path / "T").iterdir() if p.name.startswith(".trial")]  # no half-built copy left
