"""Every `rnnl2 …` command in a bash block of README.md and docs/*.md is checked against the CLI:
its command exists, every option it uses is one of that command's, every config file it names
exists and loads with its `--set` values, and every `sweep` or `tune` plans (`--dry-run`, no
training). So a renamed option, a moved config or a space the schema refuses fails here, not in
a reader's terminal. Commands on a run folder (`<run-id>`) are checked as far as the folder
allows: command and options."""

from __future__ import annotations

import os
import re
import shlex
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
