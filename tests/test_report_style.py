"""How runs look in the report's figures: one colour per λ on a log scale, a pruned tune trial
faded with a legend entry, and a baseline far off the curves labelled, not drawn."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest

from rnnl2.compare import Run
from rnnl2.report_style import colours, draw_baseline, group_style, outcome

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def run(folder: Path, status: str = "completed") -> Run:
    folder.mkdir(parents=True, exist_ok=True)
    summary = {"status": status, "baseline": "unigram", "baselines": {"unigram": {"val_loss": 5.0}}}
    return Run(folder, {}, summary, [])


def test_each_lambda_gets_its_colour_on_one_log_scale():
    groups = [({"l2.lambda": v}, []) for v in (0, 1e-5, 1e-3, 1e-1, 1e-3)]
    palette = colours(groups, ["l2.lambda"])
    assert palette[0] == "black" and palette[2] == palette[4]  # λ = 0 apart; equal λ, equal colour
    assert len({tuple(c) for c in palette[1:4]}) == 3
    middle = matplotlib.colormaps["viridis"](0.5)  # 1e-3 is halfway between 1e-5 and 1e-1 in log λ
    assert tuple(palette[2]) == pytest.approx(tuple(middle), abs=0.02)


def test_a_pruned_trial_is_faded_and_a_failed_run_is_marked(tmp_path):
    tune_dir = tmp_path / "tune"
    trials = [{"name": "trial-0000", "state": "stopped"}, {"name": "trial-0001", "state": "completed"}]
    tune_dir.mkdir()
    (tune_dir / "trials.json").write_text(json.dumps({"trials": trials}))
    pruned, kept = run(tune_dir / "trial-0000", "paused"), run(tune_dir / "trial-0001")
    diverged = run(tmp_path / "lone", "diverged")
    assert [outcome(r) for r in (pruned, kept, diverged)] == ["pruned", "ok", "failed"]
    suffix, look = group_style([pruned])
    assert suffix == " (pruned)" and look["alpha"] < 1 and look["mfc"] == "none"
    assert group_style([diverged])[0] == " (failed)" and group_style([kept]) == ("", {"marker": "o"})


def test_a_baseline_far_off_the_curves_is_labelled_and_keeps_their_scale(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [0.70, 0.65, 0.62])
    limits = ax.get_ylim()
    draw_baseline([ax], [run(tmp_path / "r")], "val_loss")  # 5.0: a line there would flatten the curve
    low, high = ax.get_ylim()  # the curves' scale, with a strip above them for the note
    span = limits[1] - limits[0]
    assert low == limits[0] and limits[1] < high <= limits[1] + 0.1 * span and len(ax.get_lines()) == 1
    (note,) = ax.texts
    assert "naive unigram: 5" in note.get_text() and "off the scale" in note.get_text()
    plt.close(fig)
