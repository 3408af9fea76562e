"""Hostile and broken input: malformed configs (Hypothesis), damaged or malicious checkpoints,
broken data files for every file-based data kind, and four runs started at once. The CLI
either works or exits 2 with a short message: never a traceback, never a run folder for
rejected input, never code run from a file."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from helpers import TINY_TAGGING, write_config
from rnnl2.cli import app

MAX_LINES = 30  # "a short message": a few lines, one per bad key
SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


pytestmark = pytest.mark.usefixtures("single_thread")


def assert_clean_outcome(result, runs_dir: Path | None = None) -> None:
    """Exit 0, or exit 2 with a short message; no traceback; no run folder when rejected."""
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        lines = result.output.strip().splitlines()
        assert 0 < len(lines) <= MAX_LINES, result.output
        assert all(len(line) <= 1000 for line in lines), "a message line is far too long"
        if runs_dir is not None:
            assert not runs_dir.exists() or not any(runs_dir.rglob("config.yaml")), "rejected input left a run folder"


# ------------------------------------------------------------------- config fuzzing

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.just("x" * 10_000),
    st.sampled_from(["1e400", "-0", "nan", "inf", "~", "[", "{a: 1"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
KEYS = [
    "name",
    "seed",
    "device",
    "data",
    "data.kind",
    "data.seq_len",
    "data.num_train",
    "data.path",
    "model",
    "model.cell",
    "model.hidden_size",
    "model.num_layers",
    "model.dropout",
    "l2",
    "l2.lambda",
    "l2.mode",
    "l2.apply_to",
    "l2.lambdas",
    "optimizer.lr",
    "optimizer.betas",
    "optimizer.scheduler.name",
    "train.epochs",
    "train.batch_size",
    "train.checkpoint_every_steps",
    "train.early_stopping.metric",
    "output",
    "nonsense",
    "model.nonsense",
    "data.kind.deeper",
]


def mutate(raw: dict, key: str, value) -> dict:
    """Set a dotted key, replacing whatever stands in the way (wrong nesting included)."""
    raw = copy.deepcopy(raw)
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = value
    return raw


@st.composite
def config_texts(draw) -> str:
    """A YAML file: the tiny config with a few keys set to hostile values, or garbage text."""
    if draw(st.integers(0, 9)) == 0:
        return draw(
            st.text(max_size=200) | st.sampled_from(["{", "a: [1, 2", "- just\n- a list", "\x00\x01", ":", "a: b: c"])
        )
    raw = copy.deepcopy(TINY_TAGGING)
    for _ in range(draw(st.integers(1, 3))):
        raw = mutate(raw, draw(st.sampled_from(KEYS) | st.text(min_size=1, max_size=10)), draw(values))
    try:
        return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:
        return "name: [unbalanced"


@settings(max_examples=80, **SETTINGS)
@given(text=config_texts(), overrides=st.lists(st.text(max_size=30), max_size=2))
def test_config_show_never_tracebacks(tmp_path_factory, text, overrides):
    config = tmp_path_factory.mktemp("fuzz") / "fuzz.yaml"
    config.write_text(text, encoding="utf-8", errors="surrogatepass")
    args = ["config", "show", str(config)] + [arg for item in overrides for arg in ("--set", item)]
    assert_clean_outcome(CliRunner().invoke(app, args))


# Training runs on configs that are mostly valid but push sizes and values to the edges.
small_configs = st.fixed_dictionaries(
    {
        "model.cell": st.sampled_from(["rnn", "lstm", "gru", "transformer"]),
        "model.hidden_size": st.sampled_from([1, 2, 8, 0, -3]),
        "model.num_layers": st.sampled_from([1, 2, 0]),
        "l2.lambda": st.sampled_from([0.0, 1e-3, 1e30, -1.0, float("inf")]),
        "l2.apply_to": st.sampled_from([["weight_ih"], ["rnn.weight_ih_l0*"], ["no.such.param*"], []]),
        "train.batch_size": st.sampled_from([1, 16, 10_000, 0]),
        "data.seq_len": st.sampled_from([1, 5, -1]),
        "optimizer.lr": st.sampled_from([1e-3, 1e6, 0.0]),
    }
)


@settings(max_examples=12, **SETTINGS)
@given(changes=small_configs)
def test_train_runs_or_refuses_cleanly(tmp_path_factory, changes):
    folder = tmp_path_factory.mktemp("train-fuzz")
    raw = copy.deepcopy(TINY_TAGGING) | {"train": {"epochs": 1, "batch_size": 16}}
    for key, value in changes.items():
        raw = mutate(raw, key, value)
    config = write_config(folder, raw)
    result = CliRunner().invoke(app, ["train", str(config), "--runs-dir", str(folder / "runs"), "-q"])
    if result.exit_code == 1:  # a run that diverged is a clean outcome too
        assert "diverged" in result.output and "Traceback" not in result.output
        return
    assert_clean_outcome(result, folder / "runs")


# ----------------------------------------------------------------------- checkpoints


class MarkerPayload:
    """Unpickling this runs os.system: what a crafted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt")
    result = CliRunner().invoke(
        app, ["train", str(write_config(folder, TINY_TAGGING)), "--run-dir", str(folder / "run"), "-q"]
    )
    assert result.exit_code == 0, result.output
    return folder / "run"


def damaged_checkpoints(good: Path, folder: Path, marker: Path) -> dict[str, Path]:
    data = good.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "corrupted": data[:200] + bytes(b ^ 0xFF for b in data[200:1200]) + data[1200:],
        "garbage": os.urandom(4096),
        "text": b"this is not a checkpoint\n",
    }
    paths = {}
    for name, content in cases.items():
        paths[name] = folder / f"{name}.pt"
        paths[name].write_bytes(content)
    paths["crafted_zip"] = folder / "crafted_zip.pt"
    torch.save({"format": "rnnl2-checkpoint-v1", "model": MarkerPayload(marker)}, paths["crafted_zip"])
    paths["crafted_pickle"] = folder / "crafted_pickle.pt"
    import pickle

    paths["crafted_pickle"].write_bytes(pickle.dumps(MarkerPayload(marker)))
    other = torch.load(good, weights_only=True)
    other["model"] = {
        k: torch.zeros(*v.shape[:-1], v.shape[-1] + 1) if v.dim() else v for k, v in other["model"].items()
    }
    paths["other_shape"] = folder / "other_shape.pt"
    torch.save(other, paths["other_shape"])
    return paths


CASES = ["truncated", "empty", "corrupted", "garbage", "text", "crafted_zip", "crafted_pickle", "other_shape"]


@pytest.mark.parametrize("case", CASES)
def test_damaged_or_malicious_checkpoint_is_refused(trained_run, tmp_path, case):
    marker = tmp_path / "pwned"
    path = damaged_checkpoints(trained_run / "checkpoints" / "best.pt", tmp_path, marker)[case]
    result = CliRunner().invoke(app, ["eval", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "error:" in result.output
    # the same file as the last checkpoint of a run being resumed
    run_dir = tmp_path / "victim"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text((trained_run / "config.yaml").read_text())
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.pt").write_bytes(path.read_bytes())
    result = CliRunner().invoke(app, ["train", "--resume", str(run_dir)])
    assert result.exit_code == 2, result.output
    assert "last.pt" in result.output and "Traceback" not in result.output
    assert not marker.exists(), "loading the checkpoint ran code from it"
    assert not (run_dir / "metrics.jsonl").exists()


# ------------------------------------------------------------------ parallel runs


def test_four_runs_started_together_get_four_complete_folders(tmp_path):
    config = write_config(tmp_path, TINY_TAGGING | {"train": {"epochs": 1, "batch_size": 16}})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "rnnl2", "train", str(config), "--runs-dir", str(tmp_path / "runs"), "-q"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=180) for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, outputs
    printed = {out.strip().splitlines()[-1] for out, _ in outputs}
    folders = sorted((tmp_path / "runs" / "tiny").iterdir())
    assert len(folders) == 4 and {str(f) for f in folders} == {str(Path(p)) for p in printed}
    for folder in folders:
        assert json.loads((folder / "summary.json").read_text())["status"] == "completed"
        assert len((folder / "metrics.jsonl").read_text().splitlines()) == 1
        assert (folder / "checkpoints" / "last.pt").is_file()


# ------------------------------------------------------------------- data fuzzing

GOOD_CSV = "date,a,b\n" + "".join(f"2020-01-{day:02d},{day * 0.5},{(day * 7) % 5}\n" for day in range(1, 29))
GOOD_TEXT_CSV = "text,label\n" + "".join(
    f"message number {i} says {'buy now' if i % 3 else 'hello friend'},{'spam' if i % 3 else 'ham'}\n"
    for i in range(40)
)
GOOD_LM = "the quick brown fox jumps over the lazy dog.\n" * 30
GOOD_UCR = "".join(
    f"{1 + i % 2}\t" + "\t".join(f"{((i + t) % 7) / 3:.3f}" for t in range(12)) + "\n" for i in range(24)
)

DATA_KINDS = {
    "timeseries_forecast": ({"path": "data.csv", "time_column": "date", "lookback": 4, "horizon": 1}, GOOD_CSV),
    "text_classification": ({"path": "data.csv", "val_ratio": 0.2, "test_ratio": 0.2}, GOOD_TEXT_CSV),
    "text_lm": ({"path": "data.csv", "ratios": [0.8, 0.1, 0.1], "bptt": 5}, GOOD_LM),
    "sequence_classification": ({"train_path": "data.csv", "test_path": "data.csv", "val_ratio": 0.25}, GOOD_UCR),
}

# The list, as file contents: each kind gets every case that applies to its format.
BROKEN_FILES = {
    "empty": b"",
    "binary_garbage": bytes(range(256)) * 8,
    "truncated": None,  # the good file cut in the middle of a line
    "mixed_encodings": None,  # the good file with latin-1 and invalid UTF-8 bytes spliced in
    "single_row": None,
    "ragged_rows": {
        "timeseries_forecast": GOOD_CSV + "2020-02-01,1.0\n2020-02-02,1,2,3,4\n",
        "text_classification": GOOD_TEXT_CSV + "only one field\na,b,c,d\n",
        "sequence_classification": GOOD_UCR + "1\t0.5\t0.2\n",
    },
    "inf_values": {
        "timeseries_forecast": GOOD_CSV.replace("2020-01-05,2.5", "2020-01-05,inf").replace(
            "2020-01-09,4.5", "2020-01-09,-Infinity"
        ),
        "sequence_classification": GOOD_UCR.replace("0.333", "inf", 3),
    },
    "duplicated_timestamps": {"timeseries_forecast": GOOD_CSV.replace("2020-01-04", "2020-01-03")},
    "single_class": {
        "text_classification": GOOD_TEXT_CSV.replace("ham", "spam"),
        "sequence_classification": GOOD_UCR.replace("2\t", "1\t"),
    },
}


def broken_content(case: str, kind: str) -> bytes | None:
    good = DATA_KINDS[kind][1]
    if case in ("empty", "binary_garbage"):
        return BROKEN_FILES[case]
    if case == "truncated":
        return good.encode()[: len(good) // 3 + 7]
    if case == "mixed_encodings":
        middle = len(good) // 2
        return good[:middle].encode() + "café".encode("latin-1") + b"\xff\xfe\xc3" + good[middle:].encode()
    if case == "single_row":
        lines = good.splitlines(keepends=True)
        return "".join(lines[:2] if kind in ("timeseries_forecast", "text_classification") else lines[:1]).encode()
    content = BROKEN_FILES[case].get(kind)
    return None if content is None else content.encode()


def train_on_file(folder: Path, kind: str, content: bytes):
    data, _ = DATA_KINDS[kind]
    (folder / "data.csv").write_bytes(content)
    raw = {
        "name": "fuzz",
        "device": "cpu",
        "data": {"kind": kind, **data},
        "model": {"hidden_size": 4, "embedding_dim": 4},
        "train": {"epochs": 1, "batch_size": 4},
    }
    config = write_config(folder, raw)
    return CliRunner().invoke(app, ["train", str(config), "--runs-dir", str(folder / "runs"), "-q"])


CASES_BY_KIND = [(kind, case) for kind in DATA_KINDS for case in BROKEN_FILES if broken_content(case, kind) is not None]


@pytest.mark.parametrize(("kind", "case"), CASES_BY_KIND, ids=[f"{k}-{c}" for k, c in CASES_BY_KIND])
def test_broken_data_file_trains_or_is_refused_cleanly(tmp_path, kind, case):
    result = train_on_file(tmp_path, kind, broken_content(case, kind))
    assert_clean_outcome(result, tmp_path / "runs")


@pytest.mark.parametrize("kind", list(DATA_KINDS))
def test_good_data_file_trains(tmp_path, kind):
    result = train_on_file(tmp_path, kind, DATA_KINDS[kind][1].encode())
    assert result.exit_code == 0, result.output


@settings(max_examples=12, **SETTINGS)
@given(
    kind=st.sampled_from(list(DATA_KINDS)),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=6),
)
def test_randomly_damaged_data_file(tmp_path_factory, kind, cut, flips):
    """The good file cut at a random point with random bytes overwritten."""
    content = bytearray(DATA_KINDS[kind][1].encode())
    content = content[: max(1, int(len(content) * cut))]
    for where, byte in flips:
        content[min(int(where * len(content)), len(content) - 1)] = byte
    folder = tmp_path_factory.mktemp("data-fuzz")
    assert_clean_outcome(train_on_file(folder, kind, bytes(content)), folder / "runs")
