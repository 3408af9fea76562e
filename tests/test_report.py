"""report: the PNG figures, report.md and report.html of a set of runs."""

from __future__ import annotations

import json

import pytest
from helpers import write_fake_run
from typer.testing import CliRunner

from rnnl2.cli import app
from rnnl2.report import ReportFiles, write_report

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def lambda_runs(tmp_path):
    for lam in (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1):
        for seed in (0, 1, 2):
            write_fake_run(tmp_path / "runs", lam, seed)
    return tmp_path / "runs"


def test_report_writes_every_figure_and_the_markdown(lambda_runs, tmp_path):
    files = write_report([lambda_runs], tmp_path / "report")
    assert isinstance(files, ReportFiles)
    assert (files.markdown, files.html) == (tmp_path / "report" / "report.md", tmp_path / "report" / "report.html")
    assert {f.name for f in files.figures} == {
        "learning_curves.png",
        "lambda_curve.png",
        "weight_norm.png",
        "grad_norm.png",
    }
    for path in files.figures:
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 10_000
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "![lambda_curve](lambda_curve.png)" in markdown
    assert "| l2.lambda | n |" in markdown and "±" in markdown
    assert '<img src="lambda_curve.png"' in (tmp_path / "report" / "report.html").read_text()


def test_no_lambda_curve_when_lambda_is_fixed(tmp_path):
    for seed in (0, 1):
        write_fake_run(tmp_path / "runs", 1e-3, seed)
    files = write_report([tmp_path / "runs"], tmp_path / "report")
    assert "lambda_curve.png" not in {f.name for f in files.figures}
    assert (tmp_path / "report" / "learning_curves.png").is_file()


def test_cli_report_prints_report_md_last(lambda_runs, tmp_path):
    result = CliRunner().invoke(app, ["report", str(lambda_runs / "lam0.001-*"), "-o", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(tmp_path / "r" / "report.md")


def test_cli_report_without_runs_exits_2(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path), "-o", str(tmp_path / "r")])
    assert result.exit_code == 2


def test_cli_report_into_an_existing_file_exits_2(lambda_runs, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    result = CliRunner().invoke(app, ["report", str(lambda_runs), "-o", str(target)])
    assert result.exit_code == 2, result.output
    assert "notes.txt: exists and is not a folder" in result.stderr and "Traceback" not in result.output
    assert target.read_text() == "keep me"


def test_report_of_a_sweep_crossing_lambda_with_apply_to_lists(tmp_path):
    for groups in (["weight_ih"], ["weight_hh"]):
        for lam in (0.0, 1e-4, 1e-3):
            for seed in (0, 1):
                write_fake_run(tmp_path / "runs" / groups[0], lam, seed, l2={"lambda": lam, "apply_to": groups})
    result = CliRunner().invoke(app, ["report", str(tmp_path / "runs"), "-o", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "lambda_curve.png").read_bytes()[:8] == PNG
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert "| l2.lambda | l2.apply_to | n |" in markdown and "['weight_hh']" in markdown


def test_report_reads_a_torn_metrics_file_and_names_a_damaged_summary(tmp_path):
    runs = [write_fake_run(tmp_path / "runs", 1e-3, seed, epochs=30) for seed in (0, 1)]
    metrics = runs[0] / "metrics.jsonl"
    metrics.write_bytes(metrics.read_bytes()[:4096])  # a full disk cut the last write
    result = CliRunner().invoke(app, ["report", str(tmp_path / "runs"), "-o", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "metrics.jsonl: line" in result.stderr and "cut short" in result.stderr
    summary = runs[1] / "summary.json"
    summary.write_text(summary.read_text()[:50])
    result = CliRunner().invoke(app, ["report", str(tmp_path / "runs"), "-o", str(tmp_path / "r")])
    assert result.exit_code == 2 and "summary.json" in result.stderr and "Traceback" not in result.output


def test_tensorboard_logging_mirrors_the_metrics(tiny_config, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = CliRunner().invoke(
        app, ["train", str(tiny_config), "--set", "output.tensorboard=true", "--run-dir", str(tmp_path / "run"), "-q"]
    )
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert {"val_loss", "train_data_loss", "weight_norm", "penalty"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("val_loss")] == [1, 2]


def test_the_naive_baseline_is_a_dashed_line_in_the_figures(lambda_runs, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rnnl2.compare import load_runs
    from rnnl2.report import draw_baseline

    runs = load_runs([lambda_runs])
    for run in runs:
        baselines = {"unigram": {"val_loss": 0.9, "val_accuracy": 0.3}}
        (run.run_dir / "summary.json").write_text(
            json.dumps(run.summary | {"baseline": "unigram", "baselines": baselines})
        )
    runs = load_runs([lambda_runs])
    fig, ax = plt.subplots()
    draw_baseline([ax], runs, "val_loss")
    (line,) = ax.get_lines()
    assert line.get_linestyle() == "--" and list(line.get_ydata()) == pytest.approx([0.9, 0.9])
    assert line.get_label() == "naive unigram (0.9)"
    plt.close(fig)
    written = write_report([lambda_runs], tmp_path / "report")
    assert written.markdown.is_file()


def test_cli_report_columns_choose_the_tables_numbers(lambda_runs, tmp_path):
    argv = ["report", str(lambda_runs), "-o", str(tmp_path / "r"), "--columns", "val_loss,wall_s"]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    header = next(line for line in (tmp_path / "r" / "report.md").read_text().splitlines() if line.startswith("| l2"))
    assert "val_loss" in header and "wall_s" in header and "test_loss" not in header
    default = write_report([lambda_runs], tmp_path / "d")
    assert "test_loss" in next(line for line in default.markdown.read_text().splitlines() if line.startswith("| l2"))
