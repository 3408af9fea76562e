"""More than a hundred bad invocations through the real CLI. For each: a documented exit code
(docs/scripting.md, "Exit codes"), no traceback, no stray run folder, and the finished run and sweep in the
workspace unchanged, byte for byte."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from helpers import TINY_TAGGING, rnnl2_argv, run_two_ranks, write_config, write_fake_run
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


class Verbatim(str):
    """A token passed as it is (a --set value may hold braces of its own)."""


def argv(*tokens: str | Callable[[Workspace], Path]) -> Callable[[Workspace], list[str]]:
    """An argument list whose tokens may name workspace paths ({config}, {root}, {run}, {sweep})
    or be a function of the workspace (a damaged copy made on first use)."""

    def build(ws: Workspace) -> list[str]:
        names = {"config": ws.config, "root": ws.root, "run": ws.done_run, "sweep": ws.fake_sweep}
        return [t if isinstance(t, Verbatim) else str(t(ws)) if callable(t) else t.format(**names) for t in tokens]

    return build


def damaged(name: str, relative: str, keep: int) -> Callable[[Workspace], Path]:
    return lambda ws: damaged_copy(ws, name, cut(relative, keep))


RUNS = ("--runs-dir", "{root}/runs")


def cases() -> list[Case]:
    found: list[Case] = []
    for number, item in enumerate(BAD_OVERRIDES):
        short = f"{number:02d} {item[:30]}"
        found.append(Case(f"train --set {short}", argv("train", "{config}", "--set", Verbatim(item), *RUNS)))
        found.append(Case(f"config show --set {short}", argv("config", "show", "{config}", "--set", Verbatim(item))))
    trunc_summary = damaged("trunc-summary", "summary.json", 40)
    found += [
        Case("train without arguments", argv("train")),
        Case("train missing config", argv("train", "{root}/missing.yaml")),
        Case("train folder as config", argv("train", "{root}/a-folder")),
        Case("train empty config", argv("train", "{root}/empty.yaml", *RUNS)),
        Case("train comments-only config", argv("train", "{root}/comments.yaml", *RUNS)),
        Case("train list config", argv("train", "{root}/list.yaml", *RUNS)),
        Case("train broken yaml", argv("train", "{root}/plain.txt", *RUNS)),
        Case("train --run-dir is a file", argv("train", "{config}", "--run-dir", "{root}/plain.txt")),
        Case("train --run-dir dangling link", argv("train", "{config}", "--run-dir", "{root}/dangling")),
        Case("train --run-dir not empty", argv("train", "{config}", "--run-dir", "{root}/nonempty")),
        Case("train --run-dir the finished run", argv("train", "{config}", "--run-dir", "{run}")),
        Case("train --runs-dir under a file", argv("train", "{config}", "--runs-dir", "{root}/plain.txt/x")),
        Case(
            "train data path is a folder",
            argv("train", "{config}", "--set", "data.kind=text_lm", "--set", "data.path={root}/a-folder", *RUNS),
        ),
        Case(
            "train data path missing",
            argv("train", "{config}", "--set", "data.kind=text_lm", "--set", "data.path={root}/missing.txt", *RUNS),
        ),
        Case("resume missing folder", argv("train", "--resume", "{root}/missing")),
        Case("resume a file", argv("train", "--resume", "{root}/plain.txt")),
        Case("resume a folder that is no run", argv("train", "--resume", "{root}/a-folder")),
        Case("resume the finished run", argv("train", "--resume", "{run}")),
        Case("resume with --run-dir", argv("train", "--resume", "{run}", "--run-dir", "{root}/x")),
        Case("resume finished with --set", argv("train", "--resume", "{run}", "--set", "train.epochs=5")),
        Case(
            "resume finished --force bad set",
            argv("train", "--resume", "{run}", "--force", "--set", "model.hidden_size=0"),
        ),
        Case(
            "resume finished --force other model",
            argv("train", "--resume", "{run}", "--force", "--set", "model.hidden_size=9", "--set", "train.epochs=3"),
        ),
        Case("eval missing", argv("eval", "{root}/missing.pt")),
        Case("eval folder without checkpoints", argv("eval", "{root}/a-folder")),
        Case("eval text file", argv("eval", "{root}/plain.txt")),
        Case("eval --split dev", argv("eval", "{run}", "--split", "dev")),
        Case("eval --device foo", argv("eval", "{run}", "--device", "foo")),
        Case("eval --device cuda:7", argv("eval", "{run}", "--device", "cuda:7")),
        Case("eval --data missing", argv("eval", "{run}", "--data", "{root}/missing.csv")),
        Case("eval truncated checkpoint", argv("eval", damaged("trunc-ckpt", "checkpoints/best.pt", 700))),
        Case("eval empty checkpoint", argv("eval", damaged("empty-ckpt", "checkpoints/best.pt", 0))),
        Case("predict --data missing", argv("predict", "{run}", "--data", "{root}/missing.csv")),
        Case("predict -o a folder", argv("predict", "{run}", "--data", "{root}/plain.txt", "-o", "{root}/a-folder")),
        Case(
            "predict -o missing folder",
            argv("predict", "{run}", "--data", "{root}/plain.txt", "-o", "{root}/missing/p.csv"),
        ),
        Case("predict seed_tagging run", argv("predict", "{run}", "--data", "{root}/plain.txt")),
        Case("sample a non-LM run", argv("sample", "{run}")),
        Case("sample negative length", argv("sample", "{run}", "--length", "-1")),
        Case("sample missing", argv("sample", "{root}/missing.pt")),
        Case("compare missing", argv("compare", "{root}/missing")),
        Case("compare empty folder", argv("compare", "{root}/a-folder")),
        Case("compare --csv missing folder", argv("compare", "{sweep}", "--csv", "{root}/missing/t.csv")),
        Case("compare --csv a folder", argv("compare", "{sweep}", "--csv", "{root}/a-folder")),
        Case("compare --sort nope", argv("compare", "{sweep}", "--sort", "nope")),
        Case("compare truncated summary", argv("compare", trunc_summary)),
        Case("compare torn metrics", argv("compare", damaged("torn-metrics", "metrics.jsonl", 60)), (0,)),
        Case("report -o existing file", argv("report", "{sweep}", "-o", "{root}/plain.txt")),
        Case("report empty folder", argv("report", "{root}/a-folder", "-o", "{root}/rep")),
        Case("report truncated summary", argv("report", trunc_summary, "-o", "{root}/rep2")),
        Case("sweep missing config", argv("sweep", "{root}/missing.yaml")),
        Case("sweep empty config", argv("sweep", "{root}/empty.yaml", *RUNS)),
        Case("sweep --grid without values", argv("sweep", "{config}", "--grid", "l2.lambda=", *RUNS)),
        Case("sweep --grid without key", argv("sweep", "{config}", "--grid", "=1,2", *RUNS)),
        Case("sweep --grid bad logspace", argv("sweep", "{config}", "--grid", "l2.lambda=logspace(a,b,c)", *RUNS)),
        Case("sweep --grid huge", argv("sweep", "{config}", "--grid", "l2.lambda=logspace(-6,-2,100000000)", *RUNS)),
        Case("sweep --grid bad value", argv("sweep", "{config}", "--grid", "l2.lambda=0,-1", *RUNS)),
        Case("sweep --grid broken yaml", argv("sweep", "{config}", "--grid", "l2.lambda=[1,", *RUNS)),
        Case("sweep --grid alias bomb", argv("sweep", "{config}", "--grid", Verbatim(ALIAS_BOMB), *RUNS)),
        Case("sweep --seeds abc", argv("sweep", "{config}", "--seeds", "abc", *RUNS)),
        Case("sweep --select bad mode", argv("sweep", "{config}", "--select", "val_loss:maybe", *RUNS)),
        Case("sweep --backend nope", argv("sweep", "{config}", "--backend", "nope")),
        Case("sweep --jobs 0", argv("sweep", "{config}", "--jobs", "0")),
        Case("sweep --sweep-dir is a file", argv("sweep", "{config}", "--sweep-dir", "{root}/plain.txt")),
        Case("tune without --space", argv("tune", "{config}", "--trials", "2", *RUNS)),
        Case("tune unknown distribution", argv("tune", "{config}", "--space", "l2.lambda=normal(0,1)", *RUNS)),
        Case("tune loguniform from 0", argv("tune", "{config}", "--space", "l2.lambda=loguniform(0,1)", *RUNS)),
        Case("tune uniform reversed", argv("tune", "{config}", "--space", "optimizer.lr=uniform(2,1)", *RUNS)),
        Case("tune int of floats", argv("tune", "{config}", "--space", "model.hidden_size=int(1.5,4)", *RUNS)),
        Case("tune empty choice", argv("tune", "{config}", "--space", "l2.mode=choice()", *RUNS)),
        Case("tune space without key", argv("tune", "{config}", "--space", "=uniform(0,1)", *RUNS)),
        Case("tune unknown key", argv("tune", "{config}", "--space", "l2.nope=uniform(0,1)", "--trials", "2", *RUNS)),
        Case("tune value the config refuses", argv("tune", "{config}", "--space", "l2.lambda=-1|uniform(0,1)", *RUNS)),
        Case("tune random without --trials", argv("tune", "{config}", "--space", "l2.lambda=uniform(0,1)", *RUNS)),
        Case(
            "tune --eta 1",
            argv("tune", "{config}", "--space", "l2.lambda=uniform(0,1)", "--trials", "2", "--eta", "1", *RUNS),
        ),
        Case(
            "tune --min-epochs past --max-epochs",
            argv(
                "tune",
                "{config}",
                "--space",
                "l2.lambda=uniform(0,1)",
                "--trials",
                "2",
                "--min-epochs",
                "5",
                "--max-epochs",
                "2",
                *RUNS,
            ),  # fmt: skip
        ),
        Case(
            "tune --trials huge",
            argv("tune", "{config}", "--space", "l2.lambda=uniform(0,1)", "--trials", "100000000", *RUNS),
        ),
        Case(
            "tune --tune-dir is a file",
            argv(
                "tune",
                "{config}",
                "--space",
                "l2.lambda=uniform(0,1)",
                "--trials",
                "2",
                "--tune-dir",
                "{root}/plain.txt",
            ),
        ),
        Case(
            "tune --sampler nope",
            argv("tune", "{config}", "--space", "l2.lambda=uniform(0,1)", "--trials", "2", "--sampler", "nope"),
        ),
        Case(
            "tune --storage garbage",
            argv(
                "tune",
                "{config}",
                "--space",
                "l2.lambda=uniform(0,1)",
                "--trials",
                "2",
                "--sampler",
                "tpe",
                "--storage",
                "nope://x",
                *RUNS,
            ),  # fmt: skip
        ),
        Case("train --pause-after 0", argv("train", "{config}", "--pause-after", "0", *RUNS)),
        Case(
            "adapt from λ = 0",
            argv("train", "{config}", "--set", "l2.adapt=hypergradient", "--set", "l2.lambda=0", *RUNS),
        ),
        Case("adapt unknown method", argv("train", "{config}", "--set", "l2.adapt=guess", *RUNS)),
        Case("config show missing", argv("config", "show", "{root}/missing.yaml")),
        Case("config show empty", argv("config", "show", "{root}/empty.yaml")),
        Case("config show list", argv("config", "show", "{root}/list.yaml")),
        Case("config show broken yaml", argv("config", "show", "{root}/plain.txt")),
        Case("unknown command", argv("fly")),
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


# --------------------------------------------------------------------------- failures at run time
# Each gets its documented exit code and a one-line reason (docs/scripting.md, "Exit codes"), not exit 3.

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def one_line_error(output: str, start: str) -> str:
    """The single `error: …` line of `output` (and no traceback), which must begin with `start`."""
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in output and "internal error" not in output, output
    assert errors[0].startswith(f"error: {start}"), errors[0]
    return errors[0]


@pytest.mark.parametrize("adapt", [None, "hypergradient"])
def test_lambda_beyond_the_float_range_is_a_divergence(tmp_path, adapt):
    """(λ/2)·Σθ² with λ = 1e300 overflows float32 at the first step: diverged, exit 1."""
    raw = TINY_TAGGING | {"l2": {"lambda": 1e300}}
    if adapt:
        raw["l2"] |= {"adapt": {"method": adapt, "max_lambda": 1e300}}
    config = write_config(tmp_path, raw)
    result = CliRunner().invoke(app, ["train", str(config), "--run-dir", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 1, result.output
    one_line_error(result.output, "training diverged in epoch 1, step 1")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"


def test_model_too_big_to_allocate_exits_1_with_parameters_and_gigabytes(tmp_path):
    """The allocator refuses (an address-space limit makes it refuse at once): exit 1 naming the
    parameters and the memory they need, and no run folder left."""
    import resource

    raw = TINY_TAGGING | {"model": {"cell": "lstm", "hidden_size": 4096, "num_layers": 8}}
    config = write_config(tmp_path, raw)

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))

    done = subprocess.run(
        rnnl2_argv("train", str(config), "--runs-dir", str(tmp_path / "runs")),
        capture_output=True, text=True, env=ENV, timeout=120, preexec_fn=limit_memory,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    line = one_line_error(done.stderr, "out of memory: ")
    found = re.search(r"out of memory: ([\d,]+) parameters need ([\d.]+) GB as float32 weights", line)
    parameters = int(found.group(1).replace(",", ""))
    assert parameters > 10**9 and float(found.group(2)) == pytest.approx(parameters * 4 / 1e9, rel=1e-2)
    assert "lower model.hidden_size" in line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.yaml"))


def test_allocator_failure_mid_run_closes_the_run_and_keeps_it_resumable(tmp_path, monkeypatch):
    """Out of memory in epoch 2 (after epoch 1's checkpoint): exit 1, summary `failed` with the
    error, and --resume continues from last.pt."""
    import rnnl2.train as train_module

    real_epoch, calls = train_module.train_one_epoch, []

    def fail_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1234 bytes")
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", fail_in_epoch_2)
    config = write_config(tmp_path, TINY_TAGGING)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(config), "--run-dir", str(run_dir), "-q"])
    assert result.exit_code == 1, result.output
    one_line_error(result.output, "out of memory:")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "can't allocate memory" in summary["error"]
    assert summary["resume_with"] == f"rnnl2 train --resume {run_dir}"
    resumed = CliRunner().invoke(app, ["train", "--resume", str(run_dir), "-q"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


def tpe_tune_argv(folder: Path, trials: int) -> list[str]:
    return [
        "tune", str(folder / "tiny.yaml"), "--space", "l2.lambda=loguniform(1e-6,1e-1)", "--trials", str(trials),
        "--sampler", "tpe", "--max-epochs", "1", "--min-epochs", "1", "--tune-dir", str(folder / "T"), "-q",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def tpe_tune(tmp_path_factory) -> Path:
    pytest.importorskip("optuna")
    folder = tmp_path_factory.mktemp("tpe")
    write_config(folder, TINY_TAGGING)
    result = CliRunner().invoke(app, tpe_tune_argv(folder, 2))
    assert result.exit_code == 0, result.output
    return folder


def copy_tune(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_garbage_inside_study_journal_exits_2_naming_file_and_line(tpe_tune, tmp_path):
    folder = copy_tune(tpe_tune, tmp_path / "copy")
    journal = folder / "T" / "study.journal"
    lines = journal.read_bytes().split(b"\n")
    lines[2] = b"\x00\xff garbage {{{"
    journal.write_bytes(b"\n".join(lines))
    result = CliRunner().invoke(app, tpe_tune_argv(folder, 2))
    assert result.exit_code == 2, result.output
    one_line_error(result.output, f"{journal}: line 3 is not an Optuna journal record; the file is damaged")


def test_torn_last_line_of_study_journal_is_dropped_with_a_warning(tpe_tune, tmp_path):
    folder = copy_tune(tpe_tune, tmp_path / "copy")
    journal = folder / "T" / "study.journal"
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-30])  # the last record cut in its middle
    result = CliRunner().invoke(app, tpe_tune_argv(folder, 2))
    assert result.exit_code == 0, result.output
    count = whole.count(b"\n")
    assert f"warning: {journal}: line {count} is cut short (a write was interrupted); dropped it" in result.output
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]  # the cut `tell` was told again


@pytest.mark.parametrize(
    "override, message",
    [
        ("l2.adapt=hypergradient", "l2.adapt does not run on several processes yet"),
        ("device=cuda:1", "device: cuda:1 under torchrun"),
    ],
)
def test_nproc_refusals_exit_2_printed_once(tmp_path, override, message):
    config = write_config(tmp_path, TINY_TAGGING)
    done = subprocess.run(
        rnnl2_argv("train", str(config), "--nproc", "2", "--set", override, "--runs-dir", str(tmp_path / "runs")),
        capture_output=True, text=True, env=ENV, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    one_line_error(done.stderr, message)
    assert not (tmp_path / "runs").exists()


def test_sigkilled_rank_exits_1_naming_it_and_the_run_resumes_exactly(tmp_path):
    """Rank 1 SIGKILLed mid-epoch: the launcher exits 1 with "rank 1 was killed by SIGKILL", the
    folder stays resumable, and `--resume --nproc 2` ends where one uninterrupted process does."""
    raw = TINY_TAGGING | {
        "data": {**TINY_TAGGING["data"], "num_train": 1600},
        "train": {"epochs": 3, "batch_size": 16, "checkpoint_every_steps": 5},
    }
    config = write_config(tmp_path, raw)
    run_dir = tmp_path / "ranks"
    launcher = subprocess.Popen(
        rnnl2_argv("train", str(config), "--nproc", "2", "--run-dir", str(run_dir), "-q"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (run_dir / "metrics.jsonl").exists() or not (run_dir / "checkpoints" / "last.pt").exists():
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()
        time.sleep(0.02)
    ranks = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
    rank_1 = next(pid for pid in ranks if "RANK=1\0" in Path(f"/proc/{pid}/environ").read_text())
    os.kill(int(rank_1), signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode == 1, stderr
    assert "error: rank 1 was killed by SIGKILL" in stderr and "internal error" not in stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    resumed = run_two_ranks(rnnl2_argv("train", "--resume", str(run_dir), "--nproc", "2", "-q"), env=ENV, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    single = CliRunner().invoke(app, ["train", str(config), "--run-dir", str(tmp_path / "single"), "-q", "--json"])
    got, expected = json.loads((run_dir / "summary.json").read_text()), json.loads(single.output)
    assert got["resumed_from"] and got["epochs_run"] == expected["epochs_run"] == 3
    for key in ("best_value", "test_loss", "test_accuracy"):
        assert got[key] == pytest.approx(expected[key], abs=1e-5), key
