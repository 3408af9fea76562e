"""More than a hundred bad invocations through the real CLI. For each: a documented exit code
(README, "Exit codes"), no traceback, no stray run folder, and the finished run and sweep in the
workspace unchanged, byte for byte."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from helpers import TINY_TAGGING, write_config, write_fake_run
from rnnl2.cli import app

pytestmark = pytest.mark.usefixtures("single_thread")

ALIAS_BOMB = (
    "seed=[&a0 [1,1,1,1,1,1,1,1,1], " + ", ".join(f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)) + "]"
)

# --set values that must be refused, each tried with `train` and with `config show`.
BAD_OVERRIDES = [
    "seed=-1",
    "seed=9223372036854775808",
    "seed=abc",
    "seed=[1, 2]",
    ALIAS_BOMB,
    "data.num_train=1000000000000",
    "data.num_train=0",
    "data.num_train=-5",
    "data.kind=nope",
    "data=5",
    "data.seq_len=0",
    "model.cell=xyz",
    "model.hidden_size=0",
    "model.num_layers=-1",
    "model.dropout=1.5",
    "l2.lambda=-1",
    "l2.lambda=.nan",
    "l2.lambda=.inf",
    "l2.mode=foo",
    "l2.lambdas={weight_hh: .nan}",
    "l2.lambdas={weight_hh: -1}",
    "l2.apply_to=5",
    "optimizer.name=adagradx",
    "optimizer.lr=-1",
    "optimizer.lr=.nan",
    "optimizer.lr=.inf",
    "train.epochs=0",
    "train.epochs=-3",
    "train.batch_size=0",
    "train.early_stopping.metric=val_nope",
    "train.early_stopping.metric=val_macro_f1",
    "train.early_stopping.mode=sideways",
    "device=foo",
    "nonsense=1",
    "model.nonsense=1",
    "=1",
    "noequals",
    "l2.lambda.deeper=1",
    "name=" + "x" * 5000,
    "optimizer.scheduler.name=cosine_maybe",
]


@dataclass
class Workspace:
    root: Path
    config: Path
    done_run: Path
    fake_sweep: Path


@dataclass
class Case:
    name: str
    argv: Callable[[Workspace], list[str]]
    codes: tuple[int, ...] = (2,)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_folders(root: Path) -> set[Path]:
    return {p.parent for p in root.rglob("config.yaml")}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("hostile")
    config = write_config(root, TINY_TAGGING | {"train": {"epochs": 1, "batch_size": 16}})
    done = root / "runs" / "done"
    result = CliRunner().invoke(app, ["train", str(config), "--run-dir", str(done), "-q"])
    assert result.exit_code == 0, result.output
    sweep = root / "fake-sweep"
    for lam in (0.0, 1e-3):
        write_fake_run(sweep, lam, seed=0)
    (root / "plain.txt").write_text("not yaml: [")
    (root / "empty.yaml").write_text("")
    (root / "comments.yaml").write_text("# nothing here\n")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "a-folder").mkdir()
    (root / "nonempty").mkdir()
    (root / "nonempty" / "keep.txt").write_text("mine")
    (root / "dangling").symlink_to(root / "nowhere")
    return Workspace(root, config, done, sweep)


def damaged_copy(ws: Workspace, name: str, damage: Callable[[Path], None]) -> Path:
    """A copy of the finished run (outside runs/) with one file damaged."""
    target = ws.root / "damaged" / name
    if not target.exists():
        for relative, data in snapshot(ws.done_run).items():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            (target / relative).write_bytes(data)
        damage(target)
    return target


def cut(relative: str, keep: int) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        path = run / relative
        path.write_bytes(path.read_bytes()[:keep])

    return damage


def cases() -> list[Case]:
    found: list[Case] = []
    for number, item in enumerate(BAD_OVERRIDES):
        short = f"{number:02d} {item[:30]}"
        found.append(
            Case(
                f"train --set {short}",
                lambda ws, i=item: ["train", str(ws.config), "--set", i, "--runs-dir", str(ws.root / "runs")],
            )
        )
        found.append(
            Case(f"config show --set {short}", lambda ws, i=item: ["config", "show", str(ws.config), "--set", i])
        )
    r = lambda ws: str(ws.done_run)  # noqa: E731
    found += [
        Case("train without arguments", lambda ws: ["train"]),
        Case("train missing config", lambda ws: ["train", str(ws.root / "missing.yaml")]),
        Case("train folder as config", lambda ws: ["train", str(ws.root / "a-folder")]),
        Case(
            "train empty config", lambda ws: ["train", str(ws.root / "empty.yaml"), "--runs-dir", str(ws.root / "runs")]
        ),
        Case(
            "train comments-only config",
            lambda ws: ["train", str(ws.root / "comments.yaml"), "--runs-dir", str(ws.root / "runs")],
        ),
        Case(
            "train list config", lambda ws: ["train", str(ws.root / "list.yaml"), "--runs-dir", str(ws.root / "runs")]
        ),
        Case(
            "train broken yaml", lambda ws: ["train", str(ws.root / "plain.txt"), "--runs-dir", str(ws.root / "runs")]
        ),
        Case(
            "train --run-dir is a file", lambda ws: ["train", str(ws.config), "--run-dir", str(ws.root / "plain.txt")]
        ),
        Case(
            "train --run-dir dangling link",
            lambda ws: ["train", str(ws.config), "--run-dir", str(ws.root / "dangling")],
        ),
        Case("train --run-dir not empty", lambda ws: ["train", str(ws.config), "--run-dir", str(ws.root / "nonempty")]),
        Case("train --run-dir the finished run", lambda ws: ["train", str(ws.config), "--run-dir", r(ws)]),
        Case(
            "train --runs-dir under a file",
            lambda ws: ["train", str(ws.config), "--runs-dir", str(ws.root / "plain.txt" / "x")],
        ),
        Case(
            "train data path is a folder",
            lambda ws: [
                "train",
                str(ws.config),
                "--set",
                "data.kind=text_lm",
                "--set",
                f"data.path={ws.root / 'a-folder'}",
                "--runs-dir",
                str(ws.root / "runs"),
            ],
        ),
        Case(
            "train data path missing",
            lambda ws: [
                "train",
                str(ws.config),
                "--set",
                "data.kind=text_lm",
                "--set",
                f"data.path={ws.root / 'missing.txt'}",
                "--runs-dir",
                str(ws.root / "runs"),
            ],
        ),
        Case("resume missing folder", lambda ws: ["train", "--resume", str(ws.root / "missing")]),
        Case("resume a file", lambda ws: ["train", "--resume", str(ws.root / "plain.txt")]),
        Case("resume a folder that is no run", lambda ws: ["train", "--resume", str(ws.root / "a-folder")]),
        Case("resume the finished run", lambda ws: ["train", "--resume", r(ws)]),
        Case("resume with --run-dir", lambda ws: ["train", "--resume", r(ws), "--run-dir", str(ws.root / "x")]),
        Case("resume finished with --set", lambda ws: ["train", "--resume", r(ws), "--set", "train.epochs=5"]),
        Case(
            "resume finished --force bad set",
            lambda ws: ["train", "--resume", r(ws), "--force", "--set", "model.hidden_size=0"],
        ),
        Case(
            "resume finished --force other model",
            lambda ws: [
                "train",
                "--resume",
                r(ws),
                "--force",
                "--set",
                "model.hidden_size=9",
                "--set",
                "train.epochs=3",
            ],
        ),
        Case("eval missing", lambda ws: ["eval", str(ws.root / "missing.pt")]),
        Case("eval folder without checkpoints", lambda ws: ["eval", str(ws.root / "a-folder")]),
        Case("eval text file", lambda ws: ["eval", str(ws.root / "plain.txt")]),
        Case("eval --split dev", lambda ws: ["eval", r(ws), "--split", "dev"]),
        Case("eval --device foo", lambda ws: ["eval", r(ws), "--device", "foo"]),
        Case("eval --device cuda:7", lambda ws: ["eval", r(ws), "--device", "cuda:7"]),
        Case("eval --data missing", lambda ws: ["eval", r(ws), "--data", str(ws.root / "missing.csv")]),
        Case(
            "eval truncated checkpoint",
            lambda ws: ["eval", str(damaged_copy(ws, "trunc-ckpt", cut("checkpoints/best.pt", 700)))],
        ),
        Case(
            "eval empty checkpoint",
            lambda ws: ["eval", str(damaged_copy(ws, "empty-ckpt", cut("checkpoints/best.pt", 0)))],
        ),
        Case("predict --data missing", lambda ws: ["predict", r(ws), "--data", str(ws.root / "missing.csv")]),
        Case(
            "predict -o a folder",
            lambda ws: ["predict", r(ws), "--data", str(ws.root / "plain.txt"), "-o", str(ws.root / "a-folder")],
        ),
        Case(
            "predict -o missing folder",
            lambda ws: [
                "predict",
                r(ws),
                "--data",
                str(ws.root / "plain.txt"),
                "-o",
                str(ws.root / "missing" / "p.csv"),
            ],
        ),
        Case("predict seed_tagging run", lambda ws: ["predict", r(ws), "--data", str(ws.root / "plain.txt")]),
        Case("sample a non-LM run", lambda ws: ["sample", r(ws)]),
        Case("sample negative length", lambda ws: ["sample", r(ws), "--length", "-1"]),
        Case("sample missing", lambda ws: ["sample", str(ws.root / "missing.pt")]),
        Case("compare missing", lambda ws: ["compare", str(ws.root / "missing")]),
        Case("compare empty folder", lambda ws: ["compare", str(ws.root / "a-folder")]),
        Case(
            "compare --csv missing folder",
            lambda ws: ["compare", str(ws.fake_sweep), "--csv", str(ws.root / "missing" / "t.csv")],
        ),
        Case("compare --csv a folder", lambda ws: ["compare", str(ws.fake_sweep), "--csv", str(ws.root / "a-folder")]),
        Case("compare --sort nope", lambda ws: ["compare", str(ws.fake_sweep), "--sort", "nope"]),
        Case(
            "compare truncated summary",
            lambda ws: ["compare", str(damaged_copy(ws, "trunc-summary", cut("summary.json", 40)))],
        ),
        Case(
            "compare torn metrics",
            lambda ws: ["compare", str(damaged_copy(ws, "torn-metrics", cut("metrics.jsonl", 60)))],
            (0,),
        ),
        Case("report -o existing file", lambda ws: ["report", str(ws.fake_sweep), "-o", str(ws.root / "plain.txt")]),
        Case("report empty folder", lambda ws: ["report", str(ws.root / "a-folder"), "-o", str(ws.root / "rep")]),
        Case(
            "report truncated summary",
            lambda ws: [
                "report",
                str(damaged_copy(ws, "trunc-summary", cut("summary.json", 40))),
                "-o",
                str(ws.root / "rep2"),
            ],
        ),
        Case("sweep missing config", lambda ws: ["sweep", str(ws.root / "missing.yaml")]),
        Case(
            "sweep empty config", lambda ws: ["sweep", str(ws.root / "empty.yaml"), "--runs-dir", str(ws.root / "runs")]
        ),
        Case(
            "sweep --grid without values",
            lambda ws: ["sweep", str(ws.config), "--grid", "l2.lambda=", "--runs-dir", str(ws.root / "runs")],
        ),
        Case(
            "sweep --grid without key",
            lambda ws: ["sweep", str(ws.config), "--grid", "=1,2", "--runs-dir", str(ws.root / "runs")],
        ),
        Case(
            "sweep --grid bad logspace",
            lambda ws: [
                "sweep",
                str(ws.config),
                "--grid",
                "l2.lambda=logspace(a,b,c)",
                "--runs-dir",
                str(ws.root / "runs"),
            ],
        ),
        Case(
            "sweep --grid huge",
            lambda ws: [
                "sweep",
                str(ws.config),
                "--grid",
                "l2.lambda=logspace(-6,-2,100000000)",
                "--runs-dir",
                str(ws.root / "runs"),
            ],
        ),
        Case(
            "sweep --grid bad value",
            lambda ws: ["sweep", str(ws.config), "--grid", "l2.lambda=0,-1", "--runs-dir", str(ws.root / "runs")],
        ),
        Case(
            "sweep --seeds abc",
            lambda ws: ["sweep", str(ws.config), "--seeds", "abc", "--runs-dir", str(ws.root / "runs")],
        ),
        Case(
            "sweep --select bad mode",
            lambda ws: ["sweep", str(ws.config), "--select", "val_loss:maybe", "--runs-dir", str(ws.root / "runs")],
        ),
        Case("sweep --backend nope", lambda ws: ["sweep", str(ws.config), "--backend", "nope"]),
        Case("sweep --jobs 0", lambda ws: ["sweep", str(ws.config), "--jobs", "0"]),
        Case(
            "sweep --sweep-dir is a file",
            lambda ws: ["sweep", str(ws.config), "--sweep-dir", str(ws.root / "plain.txt")],
        ),
        Case("config show missing", lambda ws: ["config", "show", str(ws.root / "missing.yaml")]),
        Case("config show empty", lambda ws: ["config", "show", str(ws.root / "empty.yaml")]),
        Case("config show list", lambda ws: ["config", "show", str(ws.root / "list.yaml")]),
        Case("config show broken yaml", lambda ws: ["config", "show", str(ws.root / "plain.txt")]),
        Case("unknown command", lambda ws: ["fly"]),
    ]
    return found


CASES = cases()


def test_there_are_more_than_a_hundred_cases():
    assert len(CASES) >= 100 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_invocation(workspace, case):
    done_before = snapshot(workspace.done_run)
    sweep_before = snapshot(workspace.fake_sweep)
    folders_before = run_folders(workspace.root / "runs")
    result = CliRunner().invoke(app, case.argv(workspace))
    assert result.exit_code in case.codes, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and "internal error" not in result.output
    if result.exit_code == 2:
        lines = result.output.strip().splitlines()
        assert lines and len(lines) <= 40 and all(len(line) <= 1000 for line in lines), result.output[:2000]
        assert "error" in result.output.lower() or "usage" in result.output.lower()
    assert run_folders(workspace.root / "runs") == folders_before, "a refused invocation left a run folder"
    assert snapshot(workspace.done_run) == done_before, "the finished run was changed"
    assert snapshot(workspace.fake_sweep) == sweep_before
    assert not (workspace.root / "nonempty" / ".lock").exists() and os.listdir(workspace.root / "nonempty") == [
        "keep.txt"
    ]
