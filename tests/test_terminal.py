"""The terminal is a tested surface: `train`, `sweep`, `tune`, `eval` and `report` run on a real
pseudo-terminal (pexpect), where Rich draws its bars and live lines, must exit 0 with the same
final lines and run folders as with stderr piped; also at 40 and 200 columns, with NO_COLOR=1
and with TERM=dumb. (A bar whose fields went missing once crashed `train` at its first epoch
on a terminal only: exit 3, while every piped test passed.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from helpers import TINY_TAGGING, write_config

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
COLOUR = re.compile(r"\x1b\[[0-9;]*3[0-9](;[0-9]+)*m|\x1b\[[0-9;]*9[0-7]m")  # a foreground colour (SGR 30–37, 90–97)
BAR = "━"  # Rich's bar, drawn by train's progress and the sweep/tune live line
EPOCHS = 3


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES")}
    return env | {"TERM": "xterm-256color", "OMP_NUM_THREADS": "1"} | extra


def on_terminal(args: list[str], cwd: Path, columns: int = 100, **env: str) -> tuple[int, str]:
    """`rnnl2 ARGS` on a pseudo-terminal of `columns` columns: its exit code and everything it
    drew (stdout and stderr share the terminal), carriage returns and all."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "rnnl2", *args],
        cwd=str(cwd),
        env=base_env(**env),
        dimensions=(30, columns),
        encoding="utf-8",
        codec_errors="replace",
        timeout=180,
    )
    text = child.read()
    child.close()
    return child.exitstatus, text


def piped(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rnnl2", *args], cwd=cwd, env=base_env(), capture_output=True, text=True, timeout=180
    )


def last_line(text: str) -> str:
    lines = [ANSI.sub("", line).strip() for line in text.replace("\r\n", "\n").split("\n")]
    return [line for line in lines if line][-1]


def epoch_lines(text: str) -> list[str]:
    """The per-epoch log lines without their timings (which differ between two runs)."""
    plain = ANSI.sub("", text).replace("\r", "\n")
    return [
        re.sub(r"\s+[\d.]+s$", "", line.strip())
        for line in plain.split("\n")
        if re.match(r"\s*epoch \d+/\d+  step ", line)
    ]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("terminal")
    write_config(folder, TINY_TAGGING | {"train": {"epochs": EPOCHS, "batch_size": 16}})
    return folder


@pytest.fixture(scope="module")
def piped_train(workspace) -> tuple[subprocess.CompletedProcess, Path]:
    run_dir = workspace / "piped-run"
    result = piped(["train", "tiny.yaml", "--run-dir", str(run_dir)], workspace)
    assert result.returncode == 0, result.stderr
    return result, run_dir


def final_numbers(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k.startswith(("val_", "test_")) or k in ("status", "best_epoch")}


def test_train_on_a_terminal_draws_its_bar_and_ends_as_piped(workspace, piped_train):
    result, piped_dir = piped_train
    run_dir = workspace / "terminal-run"
    code, text = on_terminal(["train", "tiny.yaml", "--run-dir", str(run_dir)], workspace)
    assert code == 0, text
    assert "internal error" not in text and "Traceback" not in text
    assert BAR in text and f"epoch 1/{EPOCHS}" in text
    assert last_line(text) == str(run_dir) and result.stdout.strip().splitlines()[-1] == str(piped_dir)
    assert epoch_lines(text) == epoch_lines(result.stderr) and len(epoch_lines(text)) == EPOCHS
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(p.name for p in piped_dir.iterdir())
    assert final_numbers(run_dir) == final_numbers(piped_dir)


@pytest.mark.parametrize(
    "columns, env",
    [(40, {"NO_COLOR": "1"}), (200, {"TERM": "dumb"})],
    ids=["40-columns-NO_COLOR", "200-columns-TERM=dumb"],
)
def test_train_on_any_terminal_exits_0_with_its_run_folder_last(workspace, piped_train, columns, env):
    _, piped_dir = piped_train
    run_dir = workspace / f"run-{columns}-{'-'.join(env) or 'plain'}"
    code, text = on_terminal(["train", "tiny.yaml", "--run-dir", str(run_dir)], workspace, columns, **env)
    assert code == 0, text
    assert "internal error" not in text
    assert last_line(text) == str(run_dir)
    assert final_numbers(run_dir) == final_numbers(piped_dir)
    assert not COLOUR.search(text), text[:500]  # both ask for no colour


def test_sweep_on_a_terminal_shows_live_progress_and_ends_as_piped(workspace):
    args = ["sweep", "tiny.yaml", "--grid", "l2.lambda=0,1e-2", "-j", "2", "--threads", "1"]
    code, text = on_terminal([*args, "--sweep-dir", "sweep-terminal"], workspace)
    assert code == 0, text
    assert "internal error" not in text
    plain = ANSI.sub("", text)
    assert re.search(r"runs \d/2 done · \d running", plain) and f"epochs {2 * EPOCHS}/{2 * EPOCHS}" in plain
    assert "ETA" in plain
    assert last_line(text) == "sweep-terminal"
    result = piped([*args, "--sweep-dir", "sweep-piped"], workspace)
    assert result.returncode == 0 and result.stdout.strip().splitlines()[-1] == "sweep-piped"
    assert "running" not in result.stderr and "ETA" not in result.stderr  # piped: one line per event only
    done = sorted(re.findall(r"done (\S+)", result.stderr))
    assert done == sorted(re.findall(r"done (\d{3}-\S+)", plain)) and len(done) == 2
    for name in done:
        assert final_numbers(workspace / "sweep-terminal" / name) == final_numbers(workspace / "sweep-piped" / name)


def test_tune_on_a_terminal_shows_the_rung_and_ends_as_piped(workspace):
    args = ["tune", "tiny.yaml", "--space", "l2.lambda=loguniform(1e-5,1e-1)", "--trials", "4", "--eta", "2"]
    args += ["--min-epochs", "1", "--max-epochs", str(EPOCHS), "--threads", "1", "--seed", "3"]
    code, text = on_terminal([*args, "--tune-dir", "tune-terminal"], workspace, 160)
    assert code == 0, text
    assert "internal error" not in text
    plain = ANSI.sub("", text)
    assert re.search(r"trials \d/4 done", plain) and re.search(r"rung 1/\d \(epoch 1, bracket 0\): \d/4 left", plain)
    assert last_line(text) == "tune-terminal"
    result = piped([*args, "--tune-dir", "tune-piped"], workspace)
    assert result.returncode == 0 and result.stdout.strip().splitlines()[-1] == "tune-piped"
    assert "rung 1/" not in result.stderr
    terminal, pipe = workspace / "tune-terminal", workspace / "tune-piped"
    assert (terminal / "trials.csv").read_text() == (pipe / "trials.csv").read_text().replace(
        "tune-piped", "tune-terminal"
    )


def test_eval_and_report_on_a_terminal_print_as_piped(workspace, piped_train):
    _, run_dir = piped_train
    checkpoint = str(run_dir / "checkpoints" / "best.pt")
    code, text = on_terminal(["eval", checkpoint], workspace)
    assert code == 0 and "internal error" not in text, text
    result = piped(["eval", checkpoint], workspace)
    assert result.returncode == 0
    numbers = lambda s: re.findall(r"(test_\w+)\s+([\d.]+)", ANSI.sub("", s).replace("│", " "))  # noqa: E731
    assert numbers(text) and numbers(text) == numbers(result.stdout)
    code, text = on_terminal(["report", str(run_dir), "--output", "report-terminal"], workspace)
    assert code == 0 and "internal error" not in text, text
    assert last_line(text).endswith("report.md") and (workspace / "report-terminal" / "report.md").is_file()
