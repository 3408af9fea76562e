"""Text kinds through the CLI: train → eval → eval --data → predict → sample on a tiny char LM,
and bad text inputs exiting 2 with no run folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import write_config
from rnnl2.cli import app
from rnnl2.config import load_config

SHAKESPEARE = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 12


def tiny_lm(path: Path) -> dict:
    return {
        "name": "tiny_lm",
        "seed": 0,
        "device": "cpu",
        "data": {"kind": "text_lm", "path": str(path), "level": "char", "bptt": 8},
        "model": {"cell": "gru", "hidden_size": 8, "embedding_dim": 4},
        "train": {"epochs": 2, "batch_size": 4, "eval_batch_size": 4},
    }


def tiny_classifier(path: Path, **data) -> dict:
    return {
        "name": "tiny_cls",
        "seed": 0,
        "device": "cpu",
        "data": {
            "kind": "text_classification",
            "path": str(path),
            "format": "tsv",
            "header": False,
            "text_field": 1,
            "label_field": 0,
            **data,
        },
        "model": {"cell": "lstm", "hidden_size": 8, "embedding_dim": 4, "pooling": "mean"},
        "train": {"epochs": 1, "batch_size": 8},
    }


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_char_lm_round_trip_train_eval_data_and_sample(tmp_path):
    text = tmp_path / "input.txt"
    text.write_text(SHAKESPEARE)
    result = invoke("train", write_config(tmp_path, tiny_lm(text)), "--runs-dir", tmp_path / "runs", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"test_loss", "test_perplexity", "test_bpc"} <= set(summary)
    run_dir = Path(summary["run_dir"])

    result = invoke("eval", run_dir, "--split", "val", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["val_loss"] == pytest.approx(summary["val_loss"], rel=1e-5)

    new = tmp_path / "new.txt"
    new.write_text("Speak, citizen! ¿Qué?\n")  # ¿ and é are unseen: <unk>
    result = invoke("eval", run_dir, "--data", new, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["data_bpc"] > 0

    result = invoke("sample", run_dir, "--prompt", "All:", "--length", "30", "--temperature", "0.8", "--seed", "3")
    assert result.exit_code == 0, result.output
    generated = result.stdout[:-1]  # print adds one newline
    assert generated.startswith("All:") and len(generated) == len("All:") + 30
    again = invoke("sample", run_dir, "--prompt", "All:", "--length", "30", "--temperature", "0.8", "--seed", "3")
    assert again.stdout == result.stdout  # seeded
    greedy = invoke("sample", run_dir, "--length", "5", "--temperature", "0")
    assert greedy.exit_code == 0 and len(greedy.stdout) == 6


def test_char_lm_predict_lists_every_next_token_and_matches_eval(tmp_path):
    import pandas as pd

    from rnnl2.evaluate import evaluate_checkpoint

    text = tmp_path / "input.txt"
    text.write_text(SHAKESPEARE)
    result = invoke("train", write_config(tmp_path, tiny_lm(text)), "--runs-dir", tmp_path / "runs")
    run_dir = result.stdout.strip().splitlines()[-1]
    new = tmp_path / "new.txt"
    new.write_text("Speak, é\nAll:")  # é is unseen: <unk>
    out = tmp_path / "tokens.csv"
    result = invoke("predict", run_dir, "--data", new, "-o", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == [
        "position",
        "previous",
        "token",
        "predicted",
        "prob_token",
        "prob_predicted",
        "surprisal",
    ]
    assert len(table) == len("Speak, é\nAll:") - 1
    assert "".join(table["token"]) == "peak, <unk>\nAll:"
    assert (table["prob_predicted"] >= table["prob_token"] - 1e-6).all()
    assert (table["surprisal"] - (-table["prob_token"].map(math.log))).abs().max() < 1e-5
    # One stream with the state carried: the mean surprisal is the loss of eval --data at batch size 1.
    record = evaluate_checkpoint(Path(run_dir), device="cpu", batch_size=1, data=new)
    assert table["surprisal"].mean() == pytest.approx(record["data_loss"], rel=1e-5)


def test_classifier_round_trip_with_predict_and_macro_f1(tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text("pos\tgood fun film\nneg\tbad dull film\n" * 20)
    result = invoke("train", write_config(tmp_path, tiny_classifier(train)), "--runs-dir", tmp_path / "runs", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"test_accuracy", "test_macro_f1", "val_macro_f1"} <= set(summary)
    new = tmp_path / "new.tsv"
    new.write_text("pos\tgood zebra\nneg\tdull\n")
    result = invoke("predict", summary["run_dir"], "--data", new)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "index,label,prob_neg,prob_pos" and len(result.stdout.splitlines()) == 3
    new.write_text("maybe\tgood\n")
    result = invoke("eval", summary["run_dir"], "--data", new)
    assert result.exit_code == 2 and "new.tsv: line 1: label 'maybe' was not seen in training" in result.output


def test_classifier_selects_on_the_val_file_and_its_checkpoint_still_predicts(tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text("pos\tgood fun film\nneg\tbad dull film\n" * 20)
    dev = tmp_path / "dev.tsv"
    dev.write_text("pos\tzebra\n" * 3 + "neg\tzebra\n")  # one text, so one prediction: accuracy 3/4 or 1/4
    raw = tiny_classifier(train, val_path=str(dev))
    result = invoke("train", write_config(tmp_path, raw), "--runs-dir", tmp_path / "runs", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["val_accuracy"] in (pytest.approx(0.75), pytest.approx(0.25))
    run_dir = Path(summary["run_dir"])
    assert load_config(run_dir / "config.yaml") == load_config(write_config(tmp_path, raw))  # the run repeats
    result = invoke("eval", run_dir, "--data", dev, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["data_accuracy"] == pytest.approx(summary["val_accuracy"])
    assert record["data_loss"] == pytest.approx(summary["val_loss"], rel=1e-5)
    result = invoke("predict", run_dir, "--data", dev)
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 5, result.output


@pytest.mark.parametrize(
    "dev, data, message",
    [
        ("pos\tgood\nmaybe\tbad\n", {}, "dev.tsv: line 2: label 'maybe' was not seen in training"),
        ("pos\tgood\n", {"val_ratio": 0.2}, "give val_path (a validation file) or val_ratio"),
        (None, {}, "dev.tsv"),
    ],
)
def test_a_bad_val_file_exits_2_without_a_run_folder(tmp_path, dev, data, message):
    train = tmp_path / "train.tsv"
    train.write_text("pos\tgood\nneg\tbad\n" * 10)
    if dev is not None:
        (tmp_path / "dev.tsv").write_text(dev)
    runs = tmp_path / "runs"
    raw = tiny_classifier(train, val_path=str(tmp_path / "dev.tsv"), **data)
    result = invoke("train", write_config(tmp_path, raw), "--runs-dir", runs)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not runs.exists() or not any(runs.rglob("config.yaml"))


def test_sample_refuses_a_classifier(tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text("pos\tgood\nneg\tbad\n" * 20)
    result = invoke("train", write_config(tmp_path, tiny_classifier(train)), "--runs-dir", tmp_path / "runs")
    run_dir = result.stdout.strip().splitlines()[-1]
    result = invoke("sample", run_dir, "--length", "3")
    assert result.exit_code == 2 and "needs a text_lm checkpoint" in result.output


@pytest.mark.parametrize(
    "kind, content, message",
    [
        ("lm", b"", "the file is empty"),
        ("lm", b"abc\x00\x01\x02" * 40, "input.txt:1: not a text file"),
        ("lm", b"fine\nalso fine\n\xff\xfe broken\n" * 10, "input.txt:3: not valid utf-8 text"),
        ("lm", b"ab", "holds 1 token(s)"),
        ("cls", b"spam\tbuy now\n" * 20, "every example has the label 'spam'"),
        ("cls", b"spam\tbuy\nham\thi\n", "the test split is empty"),
        ("cls", b"spam\tbuy\n\xc3(\n", "input.txt:2: not valid utf-8 text"),
        ("cls", b"spam\tbuy\n\tno label\n" * 10, "input.txt:2: the label is empty"),
    ],
)
def test_bad_text_input_exits_2_without_a_run_folder(tmp_path, kind, content, message):
    path = tmp_path / "input.txt"
    path.write_bytes(content)
    raw = tiny_lm(path) if kind == "lm" else tiny_classifier(path)
    runs = tmp_path / "runs"
    result = invoke("train", write_config(tmp_path, raw), "--runs-dir", runs)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not runs.exists() or not any(runs.rglob("config.yaml"))


def test_column_indexes_with_a_header_row_exit_2_without_a_run_folder(tmp_path):
    path = tmp_path / "input.tsv"
    path.write_text("pos\tgood\nneg\tbad\n" * 10)
    runs = tmp_path / "runs"
    result = invoke("train", write_config(tmp_path, tiny_classifier(path, header=True)), "--runs-dir", runs)
    assert (
        result.exit_code == 2
        and "text_field and label_field are column indexes, which need header: false" in result.output
    )
    assert "Traceback" not in result.output and not runs.exists()


def test_sample_without_a_prompt_needs_a_line_end_in_the_vocabulary(tmp_path):
    text = tmp_path / "input.txt"
    text.write_text("abcab" * 40)  # no newline: nothing marks the start of a text
    result = invoke(
        "train",
        write_config(tmp_path, tiny_lm(text) | {"train": {"epochs": 1, "batch_size": 4}}),
        "--runs-dir",
        tmp_path / "runs",
    )
    assert result.exit_code == 0, result.output
    run_dir = result.stdout.strip().splitlines()[-1]
    result = invoke("sample", run_dir, "--length", "3")
    assert result.exit_code == 2 and "give a --prompt" in result.output and "Traceback" not in result.output
    assert invoke("sample", run_dir, "--prompt", "ab", "--length", "3").exit_code == 0


@pytest.mark.parametrize("name", ["tinyshakespeare_char", "ptb_word", "trec", "sms_spam"])
def test_text_configs_validate_and_expand_the_data_path(name, monkeypatch):
    monkeypatch.setenv("RNNL2_DATA", "/data/here")
    cfg = load_config(Path(__file__).parent.parent / "configs" / f"{name}.yaml")
    assert cfg.data.path.startswith("/data/here/") and cfg.name == name
