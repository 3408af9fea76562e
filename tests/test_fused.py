"""`sweep --fused` (rnnl2/fused.py, rnnl2/launch/fused_backend.py): K runs that differ only in
λ trained as one block-diagonal model end in ordinary run folders whose metrics, weights and
optimizer state equal separate `rnnl2 train` runs to float tolerance, for every cell, pooling,
optimizer, L2 mode, clipping and per-member early stopping; a stopped fused sweep continues
each run on its own, exactly; what cannot fuse is refused before anything runs."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from helpers import TINY_TAGGING, rnnl2_argv, write_config
from rnnl2.cli import app
from rnnl2.config import validate_config
from rnnl2.fused import Member, fuse_refusal, prepare_members, train_fused
from rnnl2.wide_model import WideNet
from rnnl2.train import run

TIMING = ("seconds", "samples_per_s")
LAMBDAS = (0.0, 1e-3, 1e-1)


def merged(base: dict, change: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in change.items():
        whole = not isinstance(value, dict) or "kind" in value  # another data kind replaces the section
        out[key] = value if whole else merged(out.get(key, {}), value)
    return out


def text_file(folder: Path) -> Path:
    """Labelled lines of words, of varied lengths (packed sequences), label A marked by a word."""
    words = "the cat dog sat ran on mat fast slow big red blue".split()
    generator = torch.Generator().manual_seed(0)
    lines = []
    for i in range(120):
        label = "ABC"[i % 3]
        picks = torch.randint(len(words), (2 + i % 7,), generator=generator).tolist()
        lines.append(f"{label} {' '.join(words[p] for p in picks)}{' cat' if label == 'A' else ''}")
    path = folder / "labelled.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


CASES = {
    "lstm-adam-penalty": {},
    "gru-2-layers-bidirectional-sgd-weight-decay-clip": {
        "model": {"cell": "gru", "num_layers": 2, "bidirectional": True},
        "optimizer": {"name": "sgd", "lr": 0.3, "momentum": 0.5},
        "l2": {"mode": "weight_decay"},
        "train": {"clip_grad_norm": 0.1},
    },
    "rnn-rmsprop-step-schedule-weight-hh-only": {
        "model": {"cell": "rnn"},
        "optimizer": {"name": "rmsprop", "lr": 0.01, "scheduler": {"name": "step", "step_size": 1}},
        "l2": {"apply_to": ["weight_hh"]},
    },
    "early-stopping-per-member": {
        "optimizer": {"lr": 0.1},
        "train": {"epochs": 12, "early_stopping": {"patience": 1}, "clip_grad_norm": 0.5},
    },
    "text-classification-embedding-mean-pooling": {
        "name": "text",
        "data": {"kind": "text_classification", "path": "TEXT", "format": "lines"},
        "model": {"embedding_dim": 4, "bidirectional": True, "pooling": "mean"},
        "optimizer": {"name": "adagrad", "lr": 0.05},
    },
    "text-classification-last-pooling-2-layers": {
        "name": "text",
        "data": {"kind": "text_classification", "path": "TEXT", "format": "lines"},
        "model": {"embedding_dim": 4, "num_layers": 2, "pooling": "last"},
    },
}


def raw_case(case: str, folder: Path) -> dict:
    raw = merged(merged(TINY_TAGGING, {"train": {"epochs": 3}}), CASES[case])
    if raw["data"].get("path") == "TEXT":
        raw["data"] = {**raw["data"], "path": str(text_file(folder))}
    return raw


def rows(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def assert_same_run(got: Path, expected: Path, atol: float = 1e-5) -> None:
    got_rows, expected_rows = rows(got), rows(expected)
    assert len(got_rows) == len(expected_rows)
    for a, b in zip(got_rows, expected_rows):
        assert a.keys() == b.keys()
        for key in b:
            assert a[key] == pytest.approx(b[key], abs=atol, rel=atol), key
    summary, reference = (json.loads((folder / "summary.json").read_text()) for folder in (got, expected))
    for key in ("status", "best_epoch", "epochs_run", "steps"):
        assert summary[key] == reference[key], key
    for key in ("best_value", "test_loss", "test_accuracy"):
        assert summary[key] == pytest.approx(reference[key], abs=atol), key
    a, b = (torch.load(folder / "checkpoints" / "last.pt", weights_only=True) for folder in (got, expected))
    for name in b["model"]:
        assert torch.allclose(a["model"][name], b["model"][name], atol=atol, rtol=0), name
    for index, state in b["optimizer"]["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.dim():
                assert torch.allclose(a["optimizer"]["state"][index][key], value, atol=atol, rtol=0), (index, key)
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]


@pytest.mark.parametrize("case", list(CASES))
def test_each_fused_member_equals_its_own_run(case, tmp_path, single_thread):
    raw = raw_case(case, tmp_path)
    # early stopping: the last member stops first (λ = 1e-3 after epoch 5, 0 after 6, 1e-1 after 10),
    # and the others go on with the shuffle it no longer follows
    lambdas = (1e-1, 0.0, 1e-3) if case == "early-stopping-per-member" else LAMBDAS
    ends: list[dict] = []
    members = [
        Member(validate_config(merged(raw, {"l2": {"lambda": lam}})), tmp_path / f"fused-{k}", ends.append)
        for k, lam in enumerate(lambdas)
    ]
    prepare_members(members)
    assert train_fused(members) == []
    assert [end["exit_code"] for end in ends] == [0, 0, 0]
    for k, lam in enumerate(lambdas):
        run(validate_config(merged(raw, {"l2": {"lambda": lam}})), run_dir=tmp_path / f"alone-{k}")
        assert_same_run(tmp_path / f"fused-{k}", tmp_path / f"alone-{k}")
    if case == "early-stopping-per-member":  # the members stopped at different epochs, each on its own
        epochs = [json.loads((tmp_path / f"fused-{k}" / "summary.json").read_text())["epochs_run"] for k in range(3)]
        assert len(set(epochs)) > 1 and max(epochs) < 12, epochs


def test_off_block_weights_stay_zero_and_blocks_hold_the_members(tmp_path, single_thread):
    """The wide model holds each member's weights in its blocks and zeros elsewhere, after training too."""
    raw = raw_case("gru-2-layers-bidirectional-sgd-weight-decay-clip", tmp_path)
    cfgs = [validate_config(merged(raw, {"l2": {"lambda": lam}})) for lam in LAMBDAS]
    members = [Member(cfg, tmp_path / f"m{k}", lambda end: None) for k, cfg in enumerate(cfgs)]
    prepare_members(members)
    for k, m in enumerate(members):  # make the members differ
        with torch.no_grad():
            for p in m.s.model.parameters():
                p.add_(0.1 * (k + 1))
    wide = WideNet([m.s.model for m in members], cfgs[0])
    for name, p in wide.named_parameters():
        owned = torch.zeros(p.numel(), dtype=torch.bool)
        owned[wide.member_entries[name].view(-1)] = True
        owned = owned.view(p.shape)
        assert not p[~owned].any(), name
        for k, m in enumerate(members):
            assert torch.equal(p[wide.index(name, k)], dict(m.s.model.named_parameters())[name]), (name, k)


def sweep_args(config: Path, folder: Path, *extra: str) -> list[str]:
    return ["sweep", str(config), "--grid", "l2.lambda=0,1e-3,1e-1", "--sweep-dir", str(folder), "-q", *extra]


def test_sweep_fused_equals_the_sweep_and_a_rerun_skips_it(tmp_path):
    config = write_config(tmp_path, merged(TINY_TAGGING, {"train": {"epochs": 3}}))
    fused = CliRunner().invoke(app, sweep_args(config, tmp_path / "fused", "--fused", "--select", "val_loss", "--json"))
    plain = CliRunner().invoke(app, sweep_args(config, tmp_path / "plain", "--select", "val_loss", "--json"))
    assert fused.exit_code == 0 and plain.exit_code == 0, fused.output + plain.output
    got, expected = json.loads(fused.output), json.loads(plain.output)
    assert got["selection"]["overrides"] == expected["selection"]["overrides"]
    records = [json.loads(line) for line in (tmp_path / "fused" / "sweep.jsonl").read_text().splitlines()]
    assert [(r["status"], r["fused"]) for r in records] == [("done", 3)] * 3
    for name in ("000-l2.lambda=0", "001-l2.lambda=0.001", "002-l2.lambda=0.1"):
        assert_same_run(tmp_path / "fused" / name, tmp_path / "plain" / name)
    again = CliRunner().invoke(app, sweep_args(config, tmp_path / "fused", "--fused", "--json"))
    assert again.exit_code == 0 and json.loads(again.output)["skipped"] == 3


def test_a_grid_larger_than_a_group_trains_in_groups(tmp_path, monkeypatch):
    """At most MAX_MEMBERS runs share one wide model (it grows as K²); more train group after group."""
    import rnnl2.fused

    monkeypatch.setattr(rnnl2.fused, "MAX_MEMBERS", 2)
    config = write_config(tmp_path, merged(TINY_TAGGING, {"train": {"epochs": 2}}))
    grid = ["--grid", "l2.lambda=0,1e-3,1e-2,1e-1"]
    fused = CliRunner().invoke(app, ["sweep", str(config), *grid, "--sweep-dir", str(tmp_path / "fused"), "--fused"])
    plain = CliRunner().invoke(app, ["sweep", str(config), *grid, "--sweep-dir", str(tmp_path / "plain")])
    assert fused.exit_code == 0 and plain.exit_code == 0, fused.output + plain.output
    records = [json.loads(line) for line in (tmp_path / "fused" / "sweep.jsonl").read_text().splitlines()]
    assert [r["fused"] for r in records] == [2, 2, 2, 2]
    first, second = (records[0], records[2]), (records[1], records[3])  # runs 0, 2 then 1, 3
    assert min(r["started"] for r in second) >= max(r["finished"] for r in first)
    for record in records:
        assert_same_run(Path(record["run_dir"]), tmp_path / "plain" / record["name"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seeds", "0,1"], "--fused: the runs differ in more than l2.lambda"),
        (["--set", "model.dropout=0.2"], "--fused: fused members support none of: model.dropout"),
        (["--set", "l2.mode=decoupled"], "--fused: fused members support none of: l2.mode decoupled"),
        (["--isolate"], "--fused trains the runs in this process: use it with the local backend, without --isolate"),
    ],
)
def test_what_cannot_fuse_is_refused_before_anything_runs(tmp_path, extra, message):
    config = write_config(tmp_path, TINY_TAGGING)
    result = CliRunner().invoke(app, sweep_args(config, tmp_path / "sweep", "--fused", *extra))
    assert result.exit_code == 2 and f"error: {message}" in result.output, result.output
    assert not (tmp_path / "sweep").exists()


def test_a_dry_run_says_its_lines_are_not_fused(tmp_path):
    config = write_config(tmp_path, TINY_TAGGING)
    result = CliRunner().invoke(app, sweep_args(config, tmp_path / "sweep", "--fused", "--dry-run"))
    assert result.exit_code == 0 and "run without it to train them fused" in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("rnnl2 train ")]
    assert len(lines) == 3 and not (tmp_path / "sweep").exists()


def test_forecasts_and_huge_lambdas_are_refused():
    series = validate_config({"name": "sine", "data": {"kind": "sine"}})
    assert "data.kind sine is not fused" in fuse_refusal([series, series])
    huge = [validate_config(merged(TINY_TAGGING, {"l2": {"lambda": lam}})) for lam in (0.0, 1e300)]
    assert "l2.lambda 1e+300 is beyond float32" in fuse_refusal(huge)


def test_a_stopped_fused_sweep_continues_each_run_alone_to_the_same_end(tmp_path):
    """Ctrl-C mid-epoch: every member saves a mid-epoch checkpoint (exit 130); the rerun resumes
    each with `train --resume` and each ends as its uninterrupted run does."""
    raw = merged(TINY_TAGGING, {"data": {"num_train": 3200}, "train": {"epochs": 4}})
    config = write_config(tmp_path, raw)
    argv = rnnl2_argv(*sweep_args(config, tmp_path / "fused", "--fused"))
    driver = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "fused" / "000-l2.lambda=0" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while driver.poll() is None and not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 130, stderr
    for name in ("000-l2.lambda=0", "001-l2.lambda=0.001", "002-l2.lambda=0.1"):
        assert json.loads((tmp_path / "fused" / name / "summary.json").read_text())["status"] == "interrupted"
    rerun = CliRunner().invoke(app, sweep_args(config, tmp_path / "fused", "--fused"))
    assert rerun.exit_code == 0, rerun.output
    plain = CliRunner().invoke(app, sweep_args(config, tmp_path / "plain"))
    assert plain.exit_code == 0, plain.output
    for name in ("000-l2.lambda=0", "001-l2.lambda=0.001", "002-l2.lambda=0.1"):
        summary = json.loads((tmp_path / "fused" / name / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["resumed_from"]
        assert_same_run(tmp_path / "fused" / name, tmp_path / "plain" / name)


def test_a_loss_that_is_not_finite_hands_every_member_back_to_train_alone(tmp_path):
    """lr 1e30: the group's NaN would reach every block, so each member trains on its own from
    the start, and ends as its own run does (the one that diverges alone, `diverged`)."""
    raw = merged(TINY_TAGGING, {"optimizer": {"name": "sgd", "lr": 1e30}, "train": {"epochs": 2}})
    config = write_config(tmp_path, raw)
    fused = CliRunner().invoke(app, sweep_args(config, tmp_path / "fused", "--fused"))
    plain = CliRunner().invoke(app, sweep_args(config, tmp_path / "plain"))
    assert fused.exit_code == plain.exit_code
    for name in ("000-l2.lambda=0", "001-l2.lambda=0.001", "002-l2.lambda=0.1"):
        got, expected = (json.loads((tmp_path / f / name / "summary.json").read_text()) for f in ("fused", "plain"))
        assert got["status"] == expected["status"], name
    assert sorted(p.name for p in (tmp_path / "fused").iterdir()) == sorted(
        p.name for p in (tmp_path / "plain").iterdir()
    )
