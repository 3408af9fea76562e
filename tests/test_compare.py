"""compare: collecting run folders, differing keys as columns, sorting, by-seed groups, csv/json."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
from helpers import write_fake_run
from typer.testing import CliRunner

from rnnl2.cli import app
from rnnl2.compare import compare_runs, find_run_dirs

LAMBDAS = (0.0, 1e-4, 1e-3, 1e-2)


@pytest.fixture
def lambda_runs(tmp_path):
    """4 λ × 2 seeds of made-up finished runs; λ = 1e-3 has the lowest validation loss."""
    for lam in LAMBDAS:
        for seed in (0, 1):
            write_fake_run(tmp_path / "runs", lam, seed)
    return tmp_path / "runs"


def test_only_differing_keys_become_columns_and_rows_sort_by_val_loss(lambda_runs):
    table = compare_runs([lambda_runs], by_seed=False)
    assert table.keys == ["seed", "l2.lambda"]
    assert "model.hidden_size" not in table.columns
    for column in ("val_loss", "test_loss", "best_epoch", "gap", "weight_norm", "epochs", "wall_s"):
        assert column in table.columns
    assert len(table.rows) == 8
    values = [row["val_loss"] for row in table.rows]
    assert values == sorted(values)
    assert table.rows[0]["l2.lambda"] == 1e-3 and table.rows[0]["seed"] == 0


def test_gap_is_val_minus_train_data_loss_at_the_best_epoch(lambda_runs):
    row = compare_runs([lambda_runs / "lam0.001-seed0"]).rows[0]
    metrics = [json.loads(l) for l in (lambda_runs / "lam0.001-seed0" / "metrics.jsonl").read_text().splitlines()]
    best = next(m for m in metrics if m["epoch"] == row["best_epoch"])
    assert row["gap"] == pytest.approx(best["val_loss"] - best["train_data_loss"])
    assert row["weight_norm"] == pytest.approx(metrics[-1]["weight_norm"])


def test_by_seed_gives_mean_std_and_n(lambda_runs):
    table = compare_runs([lambda_runs], by_seed=True)
    assert table.keys == ["l2.lambda"]
    assert [row["n"] for row in table.rows] == [2, 2, 2, 2]
    best = table.rows[0]
    assert best["l2.lambda"] == 1e-3
    seed0, seed1 = (compare_runs([lambda_runs / f"lam0.001-seed{s}"]).rows[0]["val_loss"] for s in (0, 1))
    assert best["val_loss"] == pytest.approx((seed0 + seed1) / 2)
    assert best["val_loss_std"] == pytest.approx(abs(seed0 - seed1) / 2**0.5)


def test_by_seed_is_automatic_when_only_the_seed_differs(tmp_path):
    for seed in (0, 1, 2):
        write_fake_run(tmp_path, 1e-3, seed)
    table = compare_runs([tmp_path])
    assert table.by_seed and len(table.rows) == 1 and table.rows[0]["n"] == 3


def test_globs_sweep_manifests_and_folders_collect_the_same_runs(lambda_runs, tmp_path):
    by_folder = find_run_dirs([lambda_runs])
    by_glob = find_run_dirs([str(lambda_runs / "lam*-seed*")])
    assert sorted(by_folder) == sorted(by_glob) and len(by_folder) == 8
    manifest = tmp_path / "sweep"
    manifest.mkdir()
    (manifest / "sweep.jsonl").write_text("".join(json.dumps({"run_dir": str(p)}) + "\n" for p in by_folder[:3]))
    assert find_run_dirs([manifest]) == by_folder[:3]


def test_sort_by_accuracy_puts_the_highest_first(lambda_runs):
    table = compare_runs([lambda_runs], sort="val_accuracy", by_seed=True)
    assert table.mode == "max"
    assert table.rows[0]["val_accuracy"] == max(r["val_accuracy"] for r in table.rows)


def test_cli_table_csv_and_json(lambda_runs, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["compare", str(lambda_runs), "--by-seed"])
    assert result.exit_code == 0, result.output
    assert "l2.lambda" in result.stdout and "±" in result.stdout
    csv_path = tmp_path / "table.csv"
    result = runner.invoke(app, ["compare", str(lambda_runs), "--csv", str(csv_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert len(rows) == len(data["rows"]) == 8
    assert [float(r["val_loss"]) for r in rows] == [r["val_loss"] for r in data["rows"]]


def test_cli_errors_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "nothing-here")])
    assert result.exit_code == 2
    write_fake_run(tmp_path, 1e-3, 0)
    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--sort", "no_such_column"])
    assert result.exit_code == 2 and "no_such_column" in result.output


def test_compare_and_report_never_import_torch():
    code = "import sys, rnnl2.compare, rnnl2.report, rnnl2.search.sweep; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------- damaged and set-aside folders

FULL_DISK = 4096  # a write cut by a full disk ends at a block boundary


def cut(path, size: int = FULL_DISK) -> None:
    """Truncate a file as a full disk would, mid-line."""
    data = path.read_bytes()
    assert len(data) > size
    path.write_bytes(data[:size])


def test_a_torn_metrics_file_is_read_up_to_its_last_whole_line(tmp_path):
    run = write_fake_run(tmp_path / "runs", 1e-3, 0, epochs=30)
    cut(run / "metrics.jsonl")
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 0, result.output
    assert "metrics.jsonl: line" in result.stderr and "cut short" in result.stderr
    assert json.loads(result.stdout)["rows"][0]["epochs"] == 30  # summary.json is whole


@pytest.mark.parametrize("damage", ["torn", "garbage"])
def test_a_damaged_summary_is_named_exit_2(tmp_path, damage):
    run = write_fake_run(tmp_path / "runs", 1e-3, 0)
    summary = run / "summary.json"
    summary.write_text(summary.read_text()[:40] if damage == "torn" else "\x00\xff not json")
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert "summary.json" in result.stderr and "Traceback" not in result.output


def test_a_damaged_config_is_named_exit_2(tmp_path):
    run = write_fake_run(tmp_path / "runs", 1e-3, 0)
    (run / "config.yaml").write_text("name: [unclosed\n")
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "config.yaml" in result.stderr and "Traceback" not in result.output


def sweep_folder(tmp_path):
    """A sweep folder: its runs, a manifest, and an earlier attempt set aside as `<run>.failed-1/`."""
    import shutil

    sweep = tmp_path / "runs" / "tiny" / "sweep-abc"
    runs = [write_fake_run(sweep, lam, 0) for lam in LAMBDAS]
    records = [{"name": r.name, "run_dir": str(r), "status": "done", "padding": "x" * 1200} for r in runs]
    (sweep / "sweep.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    shutil.copytree(runs[0], sweep / f"{runs[0].name}.failed-1")
    return sweep, runs


def test_a_sweep_folder_never_lists_set_aside_attempts(tmp_path):
    sweep, runs = sweep_folder(tmp_path)
    expected = sorted(r.resolve() for r in runs)
    assert sorted(find_run_dirs([sweep])) == expected
    (sweep / "sweep.jsonl").unlink()  # the fallback: every run folder below, from the top
    assert sorted(find_run_dirs([sweep])) == expected
    assert sorted(find_run_dirs([tmp_path / "runs"])) == expected
    named = sweep / f"{runs[0].name}.failed-1"
    assert find_run_dirs([named]) == [named.resolve()]  # still readable when asked for by name


def test_a_torn_sweep_manifest_loses_no_run(tmp_path):
    sweep, runs = sweep_folder(tmp_path)
    cut(sweep / "sweep.jsonl")
    result = CliRunner().invoke(app, ["compare", str(sweep), "--json"])
    assert result.exit_code == 0, result.output
    assert "sweep.jsonl: line" in result.stderr and "cut short" in result.stderr
    assert sorted(row["run"] for row in json.loads(result.stdout)["rows"]) == sorted(r.name for r in runs)


def test_a_damaged_sweep_manifest_is_named_exit_2(tmp_path):
    sweep, _ = sweep_folder(tmp_path)
    (sweep / "sweep.jsonl").write_text("not json\n" + (sweep / "sweep.jsonl").read_text())
    result = CliRunner().invoke(app, ["compare", str(sweep)])
    assert result.exit_code == 2 and "sweep.jsonl: line 1" in result.stderr and "Traceback" not in result.output


def test_list_valued_config_keys_compare_and_group(tmp_path):
    for groups in (["weight_ih"], ["weight_hh"]):
        for seed in (0, 1):
            write_fake_run(tmp_path / groups[0], 1e-3, seed, l2={"lambda": 1e-3, "apply_to": groups})
    table = compare_runs([tmp_path], by_seed=True)
    assert table.keys == ["l2.apply_to"] and sorted(r["n"] for r in table.rows) == [2, 2]


# ------------------------------------------------------- any summary number, tasks, baselines


def add_to_summary(run_dir, **fields) -> None:
    path = run_dir / "summary.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | fields))


def with_baseline(run_dir, test_loss: float) -> None:
    """A reference baseline whose test loss is `test_loss` (the run's own is in its summary)."""
    add_to_summary(run_dir, baseline="unigram", baselines={"unigram": {"val_loss": 1.0, "test_loss": test_loss}})


def test_sort_and_columns_take_any_number_in_summary_json(lambda_runs):
    for i, run in enumerate(sorted(lambda_runs.iterdir())):
        add_to_summary(run, test_mae=10.0 - i, data={"train": 64 + i})
    table = compare_runs([lambda_runs], sort="test_mae", by_seed=False)
    assert "test_mae" in table.columns
    assert [r["test_mae"] for r in table.rows] == sorted(r["test_mae"] for r in table.rows)
    chosen = compare_runs([lambda_runs], by_seed=False, columns=["data.train", "wall_s"])
    assert [c for c in chosen.numeric] == ["data.train", "wall_s"]
    assert "val_loss" not in chosen.columns and chosen.sort == "data.train"
    with pytest.raises(Exception, match="--columns nope: not a column"):
        compare_runs([lambda_runs], columns=["nope"])


def test_vs_baseline_is_the_relative_improvement_of_the_test_metric(tmp_path):
    run = write_fake_run(tmp_path, 1e-3, 0)
    summary = json.loads((run / "summary.json").read_text())
    with_baseline(run, summary["test_loss"] * 1.25)  # the model's loss is 20% below the baseline's
    table = compare_runs([tmp_path])
    assert "vs_baseline" in table.columns
    assert table.rows[0]["vs_baseline"] == pytest.approx(0.2)
    assert table.cell(table.rows[0], "vs_baseline") == "+20.0%"  # one seed: no ± part


def test_runs_of_different_tasks_get_one_table_each(tmp_path):
    from rnnl2.compare import compare_by_task

    sine = {"kind": "sine", "lookback": 6, "horizon": 2, "num_train": 32, "num_val": 8, "num_test": 8}
    for seed in (0, 1):
        write_fake_run(tmp_path / "tagging", 1e-3, seed)
        write_fake_run(tmp_path / "sine", 1e-3, seed, data=sine)
    for run in (tmp_path / "sine").iterdir():
        add_to_summary(run, test_mae=0.5)
    tables = compare_by_task([tmp_path], sort="test_mae")
    assert sorted(t.task for t in tables) == ["regression", "tagging"]
    by_task = {t.task: t for t in tables}
    assert by_task["regression"].sort == "test_mae" and by_task["tagging"].sort == "val_loss"
    assert all(len(t.rows) == 1 and t.rows[0]["n"] == 2 for t in tables)  # each: only the seed differs
    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert sorted(t["task"] for t in json.loads(result.stdout)["tables"]) == ["regression", "tagging"]
    printed = CliRunner().invoke(app, ["compare", str(tmp_path)])
    assert "regression runs" in printed.stdout and "tagging runs" in printed.stdout
    rows = list(csv.DictReader(io.StringIO(CliRunner().invoke(app, ["compare", str(tmp_path), "--csv", "-"]).stdout)))
    assert sorted({r["task"] for r in rows}) == ["regression", "tagging"] and len(rows) == 2


def test_lambda_prints_alike_in_every_row(lambda_runs):
    table = compare_runs([lambda_runs], by_seed=True)
    shown = sorted(table.cell(row, "l2.lambda") for row in table.rows)
    assert shown == ["0", "1e-2", "1e-3", "1e-4"]


@pytest.mark.parametrize("width", [80, 120])
def test_a_narrow_terminal_keeps_the_keys_the_metrics_and_vs_baseline(lambda_runs, width):
    """At 80 (or 120) columns: the varying key, the selection metric, the first test metric and
    vs_baseline always; the rest only while they fit, and the caption names those left out."""
    from rnnl2.compare import compare_by_task

    (comparison,) = compare_by_task([str(lambda_runs)], by_seed=True)
    shown, hidden = comparison.fitting_columns(width)
    assert {"l2.lambda", comparison.sort} | ({"vs_baseline"} & set(comparison.shown_columns())) <= set(shown)
    assert any(c.startswith("test_") for c in shown)
    assert hidden and set(shown) | set(hidden) == set(comparison.shown_columns())
    from rich.console import Console

    from rnnl2.cli import comparison_table

    console = Console(width=width, record=True)
    console.print(comparison_table(comparison, "runs", width))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= width
    assert any("…" not in line and "l2.lambda" in line for line in lines)  # headers whole, not elided
    assert f"{len(hidden)} more: {', '.join(hidden)}" in " ".join(lines).replace("  ", " ")
    wide = comparison.fitting_columns(1000)
    assert wide == (comparison.shown_columns(), [])


def test_format_csv_json_markdown_print_every_column(lambda_runs):
    runner = CliRunner()
    as_csv = runner.invoke(app, ["compare", str(lambda_runs), "--format", "csv"])
    as_json = runner.invoke(app, ["compare", str(lambda_runs), "--format", "json"])
    as_markdown = runner.invoke(app, ["compare", str(lambda_runs), "--format", "markdown"])
    assert as_csv.exit_code == as_json.exit_code == as_markdown.exit_code == 0, as_markdown.output
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    data = json.loads(as_json.stdout)
    table = [line for line in as_markdown.stdout.splitlines() if line.startswith("|")]
    assert len(rows) == len(data["rows"]) == len(table) - 2 == 8
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert {"l2.lambda", "val_loss", "test_loss", "epochs"} <= set(header) and "run_dir" not in header
    assert table[1].count("---") == len(header)
    bad = runner.invoke(app, ["compare", str(lambda_runs), "--format", "xml"])
    assert bad.exit_code == 2


def test_diff_shows_the_differing_config_and_every_final_number(lambda_runs, tmp_path):
    a, b = sorted(p for p in lambda_runs.iterdir() if p.is_dir())[:2]
    result = CliRunner().invoke(app, ["diff", str(a), str(b), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    keys = {row["key"] for row in data["config"]}
    assert keys and all(row["a"] != row["b"] for row in data["config"])
    summary_a = json.loads((a / "summary.json").read_text())
    summary_b = json.loads((b / "summary.json").read_text())
    val = next(row for row in data["metrics"] if row["key"] == "val_loss")
    assert (val["a"], val["b"]) == (summary_a["val_loss"], summary_b["val_loss"])
    assert val["change"] == pytest.approx(summary_b["val_loss"] - summary_a["val_loss"])
    shown = CliRunner().invoke(app, ["diff", str(a), str(b)])
    assert shown.exit_code == 0 and "val_loss" in shown.stdout and "B − A" in shown.stdout
    missing = CliRunner().invoke(app, ["diff", str(a), str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "not a run folder" in missing.output and "Traceback" not in missing.output
