"""Every `rnnl2 …` command in a bash block of README.md and docs/*.md is checked against the CLI:
its command exists, every option it uses is one of that command's, every config file it names
exists and loads with its `--set` values, and every `sweep` or `tune` plans (`--dry-run`, no
training). So a renamed option, a moved config or a space the schema refuses fails here, not in
a reader's terminal. Then the pages run: every command, in order, shrunk to seconds, on the run
and sweep folders the commands before it made (`<run-id>` and `sweep-1a2b3c4d` filled in)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from rnnl2.cli import app
from rnnl2.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DATA = ROOT.parent / "shared" / "data"


def commands() -> list[tuple[str, str]]:
    """(page, command line) for every line of a ```bash block that starts with `rnnl2 `."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S):
            for line in block.splitlines():
                line = line.strip()
                if line.startswith("RNNL2_DATA="):
                    line = line.split(None, 1)[1]
                if line.startswith("rnnl2 "):
                    found.append((page.name, line))
    return found


def words(line: str) -> list[str]:
    """The command's own words: no comment, no pipe or redirection after it."""
    cut = shlex.split(line, comments=True)
    for stop in ("|", ">", "&&"):
        if stop in cut:
            cut = cut[: cut.index(stop)]
    return cut[1:]


def resolve(args: list[str]) -> tuple[Any, list[str]]:
    """The (sub)command the words name, and the words after it (typer's own click: duck-typed)."""
    command = typer.main.get_command(app)
    while hasattr(command, "commands") and args and args[0] in command.commands:
        command, args = command.commands[args[0]], args[1:]
    return command, args


CASES = commands()


def test_the_pages_hold_commands():
    assert len(CASES) >= 30 and {page for page, _ in CASES} >= {"README.md", "search.md", "data.md"}


@pytest.mark.parametrize("page, line", CASES, ids=[f"{p}:{n}" for n, (p, _) in enumerate(CASES)])
def test_a_documented_command_fits_the_cli(page, line, tmp_path, monkeypatch):
    command, rest = resolve(words(line))
    assert not hasattr(command, "commands"), f"{page}: {line}: no such command"
    known = {name for param in command.params for name in (*param.opts, *param.secondary_opts)}
    used = {arg.split("=", 1)[0] for arg in rest if arg.startswith("-") and not re.match(r"-\d", arg)}
    assert used <= known, f"{page}: {line}: unknown options {sorted(used - known)}"
    configs = [arg for arg in rest if arg.startswith("configs/") and arg.endswith(".yaml")]
    if not configs:
        return
    if "RNNL2_DATA" in (ROOT / configs[0]).read_text() and not DATA.is_dir():
        pytest.skip(f"{configs[0]} reads ../shared/data, which this machine lacks")
    monkeypatch.setenv("RNNL2_DATA", str(DATA))
    monkeypatch.chdir(ROOT)
    sets = [rest[i + 1] for i, arg in enumerate(rest[:-1]) if arg == "--set"]
    if command.name in ("sweep", "tune"):
        extra = ["--runs-dir", str(tmp_path / "runs"), "--dry-run"]
        result = CliRunner().invoke(app, [*words(line), *extra], env={**os.environ})
        assert result.exit_code == 0, f"{page}: {line}: {result.output[-800:]}"
        assert not (tmp_path / "runs").exists()
    elif not configs[0].startswith("configs/sweeps/"):
        load_config(ROOT / configs[0], sets)


# --- The pages run: each page's commands in order, shrunk, in a scratch folder -------------------

SHRINK = [  # every documented config trains on seed_tagging: a few seconds at this size
    *("--set", "data.num_train=96", "--set", "data.num_val=32", "--set", "data.num_test=32"),
    *("--set", "model.hidden_size=8", "--set", "train.epochs=2"),
]
SAMPLE_SWEEP = re.compile(r"sweep-1a2b3c4d")
RUN_ID = re.compile(r"(runs/[\w.-]+)/<run-id>")


def newest(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.glob(pattern), key=lambda path: path.stat().st_mtime)
    return found[-1] if found else None


def folders(line: str) -> list[str]:
    """The `runs/…` folders a command line reads (not the one it writes with --run-dir)."""
    named = words(line)
    written = {named[i + 1] for i, word in enumerate(named[:-1]) if word == "--run-dir"}
    return [word for word in named if word.startswith("runs/") and word not in written]


def runnable(line: str, scratch: Path) -> list[str] | None:
    """The command's words with its placeholders filled from what the page made before, shrunk to
    seconds; None when the page's own commands cannot make what it reads (a real dataset's run, a
    user's CSV, a Ray cluster)."""
    if "--backend ray" in line or "--data " in line:
        return None
    if any(not (scratch / folder.split("/")[0] / folder.split("/")[1]).exists() for folder in folders(line)):
        return None  # a folder of another page's runs
    for match in RUN_ID.finditer(line):
        run = newest(scratch / match[1], "[!s]*/summary.json")  # a run folder, not a sweep's
        if run is None:
            return None
        line = line.replace(match[0], str(run.parent.relative_to(scratch)))
    if SAMPLE_SWEEP.search(line):  # the newest sweep that holds the run folders the line names
        sweeps = sorted((scratch / "runs").glob("*/sweep-*"), key=lambda path: -path.stat().st_mtime)
        filled = [SAMPLE_SWEEP.sub(sweep.name, line) for sweep in sweeps]
        fits = [fill for fill in filled if all((scratch / path).exists() for path in folders(fill) if "*" not in path)]
        if not fits:
            return None
        line = fits[0]
    args = words(line)
    if args[0] in ("train", "sweep", "tune") and "--resume" not in args:
        args += SHRINK
    if args[0] in ("sweep", "tune") and "--jobs" in args:
        args[args.index("--jobs") + 1] = "1"  # one warm worker: a second one's start-up is most of a shrunk sweep
    if args[0] == "tune" and "grid" not in args:  # a grid sampler runs every point of its grid
        args += ["--trials", "3"] if "--trials" not in args else []
        args[args.index("--trials") + 1] = "3"
    return args


def stop_a_run(scratch: Path) -> None:
    """A seed_lstm run stopped by Ctrl-C after its first checkpoint, so that the page's `--resume`
    continues a run that stopped, as its comment says (30 short epochs: seconds to finish)."""
    runs = scratch / "runs" / "seed_lstm"
    before = set(runs.glob("*"))
    sizes = ["--set", "data.num_train=960", "--set", "train.epochs=30"]
    process = subprocess.Popen(
        [sys.executable, "-m", "rnnl2", "train", "configs/seed_lstm.yaml", *SHRINK, *sizes],
        cwd=scratch,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not any((run / "checkpoints" / "last.pt").exists() for run in set(runs.glob("*")) - before):
        assert process.poll() is None and time.monotonic() < deadline, "the run to stop ended first"
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130


def test_the_pages_run_top_to_bottom(tmp_path, monkeypatch):
    """Every page's commands run, page after page (README first) and in each page's order, in one
    scratch folder, on what the commands before them made: a resume resumes the README's run, a
    report reads the search page's sweep. Commands that need a real dataset's run, a user's CSV or
    a Ray cluster are checked by the test above only."""
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    ran = []
    for page, line in CASES:
        if "--resume" in line and "--force" not in line:
            stop_a_run(tmp_path)
        args = runnable(line, tmp_path)
        if args is None:
            continue
        result = CliRunner().invoke(app, args, env={**os.environ, "COLUMNS": "80"})
        assert result.exit_code == 0, f"{page}: {line}: {result.output[-1500:]}"
        ran.append((page, args[0]))
    assert {"README.md", "search.md", "resume.md", "tracking.md"} <= {page for page, _ in ran}
    assert {"train", "eval", "sweep", "tune", "compare", "diff", "report"} <= {command for _, command in ran}
    assert len(ran) >= 28
