"""The config schema: shipped configs, defaults, readable errors (through the CLI), overrides,
`config show` / `config schema`, and path expansion."""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ValidationError
from typer.testing import CliRunner

from rnnl2.cli import app
from rnnl2.config import (
    ConfigError,
    FilePath,
    L2Config,
    OptimizerConfig,
    RunConfig,
    SeedTaggingData,
    load_config,
    read_yaml,
    to_plain_dict,
    validate_config,
)
from rnnl2.config.loading import MAX_YAML_VALUES
from helpers import TINY_TAGGING, write_config

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one torch thread

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def tiny(**sections) -> dict:
    """TINY_TAGGING with some sections merged in (one level deep)."""
    raw = copy.deepcopy(TINY_TAGGING)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path, tmp_path, monkeypatch):
    if "RNNL2_DATA" not in os.environ:  # configs of real datasets name their files under $RNNL2_DATA
        monkeypatch.setenv("RNNL2_DATA", str(tmp_path))
    cfg = load_config(path)
    assert cfg.name == yaml.safe_load(path.read_text())["name"]


def test_there_are_shipped_configs():
    assert {p.name for p in CONFIGS} >= {"quickstart.yaml", "seed_lstm.yaml", "adding_lstm.yaml"}


def test_seed_lstm_config_is_the_seed_model():
    cfg = load_config(CONFIGS[[p.name for p in CONFIGS].index("seed_lstm.yaml")])
    assert (cfg.model.cell, cfg.model.hidden_size, cfg.model.num_layers, cfg.model.dropout) == ("lstm", 128, 2, 0.5)
    assert cfg.l2.lambda_ == pytest.approx(2e-4)  # Keras l2(1e-4) → λ = 2x
    assert cfg.l2.apply_to == ["rnn.weight_ih_l0"]
    assert (cfg.optimizer.name, cfg.optimizer.lr) == ("adam", 1e-3)


def test_defaults(tmp_path):
    cfg = load_config(write_config(tmp_path, {"name": "d"}))
    assert cfg.seed == 0 and cfg.device == "auto"
    assert cfg.data == SeedTaggingData()
    assert cfg.l2.lambda_ == 0.0 and cfg.l2.mode == "penalty"
    assert cfg.l2.apply_to == ["weight_ih", "weight_hh", "embedding", "head"]  # every weight, no bias
    assert cfg.l2.lambdas == {}
    assert cfg.optimizer.name == "adam" and cfg.optimizer.scheduler.name == "none"
    assert cfg.train.clip_grad_norm is None and cfg.train.max_steps is None
    assert cfg.train.early_stopping.metric == "val_loss" and cfg.train.early_stopping.patience is None
    assert cfg.output.save_checkpoints is True


def test_name_defaults_to_the_file_stem(tmp_path):
    raw = tiny()
    del raw["name"]
    assert load_config(write_config(tmp_path, raw, "my-run.yaml")).name == "my-run"


def test_config_is_frozen(tiny_config):
    cfg = load_config(tiny_config)
    with pytest.raises(ValidationError):
        cfg.seed = 3


def test_every_field_has_a_description():
    def walk(model: type[BaseModel], prefix: str):
        for name, field in model.model_fields.items():
            if name == "kind":
                continue
            assert field.description, f"{prefix}{name} has no description"
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.")

    walk(RunConfig, "")
    walk(SeedTaggingData, "data.")


# ------------------------------------------------------------------ bad configs

BAD_CONFIGS = {
    "negative_lambda": (tiny(l2={"lambda": -1}), ["l2.lambda", "-1", "greater than or equal to 0"]),
    "misspelt_key": (tiny(l2={"lamda": 1e-3}), ["l2.lamda", "unknown key", "did you mean 'lambda'"]),
    "misspelt_nested_key": (
        tiny(optimizer={"scheduler": {"gama": 0.5}}),
        ["optimizer.scheduler.gama", "did you mean 'gamma'"],
    ),
    "misspelt_data_key": (tiny(data={"input_dimm": 3}), ["data.input_dimm", "did you mean 'input_dim'"]),
    "misspelt_section": (tiny(optimiser={"lr": 0.1}), ["optimiser", "did you mean 'optimizer'"]),
    "wrong_type": (tiny(train={"epochs": "ten"}), ["train.epochs", "integer", "'ten'"]),
    "unknown_data_kind": (tiny(data={"kind": "mnist"}), ["data.kind", "'mnist'", "seed_tagging"]),
    "adamw_with_weight_decay": (
        tiny(l2={"mode": "weight_decay"}, optimizer={"name": "adamw"}),
        ["weight_decay", "adamw", "decoupled"],
    ),
    "nesterov_without_momentum": (tiny(optimizer={"name": "sgd", "nesterov": True}), ["nesterov", "momentum"]),
    "decoupled_adagrad": (tiny(l2={"mode": "decoupled"}, optimizer={"name": "adagrad"}), ["decoupled", "adagrad"]),
    "negative_group_lambda": (
        tiny(l2={"lambdas": {"weight_hh": -0.5}}),
        ["l2.lambdas.weight_hh", "greater than or equal to 0"],
    ),
    "nan_group_lambda": (tiny(l2={"lambdas": {"weight_hh": float("nan")}}), ["l2.lambdas.weight_hh", "finite", "nan"]),
    "inf_group_lambda": (tiny(l2={"lambdas": {"head": float("inf")}}), ["l2.lambdas.head", "finite", "inf"]),
    "inf_lambda": (tiny(l2={"lambda": float("inf")}), ["l2.lambda", "finite"]),
    "seed_past_2_63": (tiny(seed=2**63), ["seed", "from 0 to 2**63 - 1", "9223372036854775808"]),
    "negative_seed": (tiny(seed=-1), ["seed", "from 0 to 2**63 - 1"]),
    "metric_not_logged": (
        tiny(train={"early_stopping": {"metric": "val_mse"}}),
        ["train.early_stopping.metric", "'val_mse'", "seed_tagging", "val_loss, val_accuracy"],
    ),
    "mode_against_metric": (
        tiny(train={"early_stopping": {"metric": "val_accuracy", "mode": "min"}}),
        ["train.early_stopping", "mode min", "higher", "mode: max"],
    ),
    "unknown_mode": (tiny(l2={"mode": "ridge"}), ["l2.mode", "'ridge'", "penalty"]),
    "bad_device": (tiny(device="gpu"), ["device", "'gpu'"]),
    "multistep_without_milestones": (
        tiny(optimizer={"scheduler": {"name": "multistep"}}),
        ["multistep needs milestones"],
    ),
    "milestones_out_of_order": (
        tiny(optimizer={"scheduler": {"milestones": [5, 4]}}),
        ["milestones must increase", "[5, 4]"],
    ),
    "zero_init_scale": (tiny(model={"init_scale": 0}), ["model.init_scale", "greater than 0"]),
    "weight_drop_one": (tiny(model={"weight_drop": 1.0}), ["model.weight_drop", "each p must lie in [0, 1)"]),
    "weight_drop_negative_in_a_list": (
        tiny(model={"num_layers": 2, "weight_drop": [0.5, -0.1]}),
        ["model.weight_drop", "[0, 1)", "[0.5, -0.1]"],
    ),
    "weight_drop_per_layer_count": (
        tiny(model={"weight_drop": [0.5, 0.5]}),
        ["model", "weight_drop lists 2 rates, but num_layers is 1"],
    ),
    "input_dropout_one": (tiny(model={"input_dropout": 1.0}), ["model.input_dropout", "less than 1"]),
    "negative_embedding_dropout": (
        tiny(model={"embedding_dropout": -0.1}),
        ["model.embedding_dropout", "greater than or equal to 0"],
    ),
    "locked_dropout_not_a_bool": (tiny(model={"locked_dropout": "often"}), ["model.locked_dropout", "'often'"]),
    "negative_ar": (tiny(regularization={"ar": -2}), ["regularization.ar", "greater than or equal to 0"]),
    "nan_tar": (tiny(regularization={"tar": float("nan")}), ["regularization.tar", "finite"]),
    "misspelt_ar": (tiny(regularization={"alpha": 2}), ["regularization.alpha", "unknown key", "ar, tar, max_norm"]),
    "negative_l1": (tiny(l1={"lambda": -1e-4}), ["l1.lambda", "greater than or equal to 0"]),
    "negative_l1_group": (tiny(l1={"lambdas": {"head": -1}}), ["l1.lambdas.head", "greater than or equal to 0"]),
    "zero_max_norm": (
        tiny(regularization={"max_norm": {"value": 0}}),
        ["regularization.max_norm.value", "greater than 0"],
    ),
    "max_norm_without_value": (tiny(regularization={"max_norm": {}}), ["regularization.max_norm.value", "missing"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_raises_config_error_naming_the_key(tmp_path, case):
    raw, fragments = BAD_CONFIGS[case]
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, raw))
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize("command", [["train"], ["config", "show"]])
@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_through_the_cli_exits_2_without_traceback_or_run_folder(tmp_path, case, command):
    raw, fragments = BAD_CONFIGS[case]
    path = write_config(tmp_path, raw)
    runs = tmp_path / "runs"
    extra = ["--runs-dir", str(runs)] if command == ["train"] else []
    result = CliRunner().invoke(app, [*command, str(path), *extra])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    for fragment in fragments:
        assert fragment in result.stderr
    assert not runs.exists() or not any(runs.rglob("*"))


def test_malformed_yaml_names_file_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nmodel:\n  cell: lstm\n   hidden_size: 8\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{path}:4:" in str(info.value)
    result = CliRunner().invoke(app, ["train", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "broken.yaml:4:" in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*"))


def test_unclosed_flow_list_reports_a_position(tmp_path):
    path = tmp_path / "open.yaml"
    path.write_text("name: x\nl2:\n  apply_to: [weight_ih,\n")
    with pytest.raises(ConfigError, match=r"open\.yaml:\d+:\d+: invalid YAML"):
        load_config(path)


def test_a_yaml_list_is_not_a_config(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "null\n", "---\n", "{}\n"])
def test_an_empty_config_is_refused_not_run_with_every_default(tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"empty\.yaml: is empty"):
        load_config(path)
    result = CliRunner().invoke(app, ["train", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert "empty.yaml: is empty" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_a_config_with_only_a_name_still_means_the_defaults(tmp_path):
    assert load_config(write_config(tmp_path, {"name": "n"})).data == SeedTaggingData()


# Six nested levels of nine aliases: 9**6 ≈ 530,000 values from ~300 bytes of YAML. Small enough
# that even code without the bound builds it in a moment; past MAX_YAML_VALUES all the same.
ALIAS_BOMB = (
    "["
    + ", ".join(["&a0 [1,1,1,1,1,1,1,1,1]"] + [f"&a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 6)])
    + "]"
)


def test_an_alias_bomb_in_an_override_is_refused_in_a_short_message(tiny_config):
    started = time.monotonic()
    result = CliRunner().invoke(app, ["config", "show", str(tiny_config), "--set", f"seed={ALIAS_BOMB}"])
    assert time.monotonic() - started < 2
    assert result.exit_code == 2, result.output[:500]
    assert "too many aliases" in result.stderr and f"more than {MAX_YAML_VALUES:,} values" in result.stderr
    assert "--set 'seed=" in result.stderr
    assert len(result.output) < 600 and "Traceback" not in result.output


def test_an_alias_bomb_in_a_config_or_sweep_file_is_refused(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(f"name: bomb\nl2:\n  apply_to: {ALIAS_BOMB}\n")
    started = time.monotonic()
    result = CliRunner().invoke(app, ["config", "show", str(path)])
    assert time.monotonic() - started < 2
    assert result.exit_code == 2 and "bomb.yaml:" in result.stderr and "too many aliases" in result.stderr
    assert len(result.output) < 600
    with pytest.raises(ConfigError, match="too many aliases"):  # sweep files are read by the same function
        read_yaml(path)


def test_a_self_referencing_alias_is_refused(tiny_config):
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tiny_config, ["l2.apply_to=&a [*a]"])


def test_yaml_nested_too_deeply_is_a_config_error(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match="too deeply"):
        load_config(tiny_config, ["seed=" + "[" * 5000 + "]" * 5000])


def test_aliases_within_the_limit_still_work(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text(
        "name: anchors\nl2:\n  apply_to: &groups [weight_ih, weight_hh]\n"
        "  lambdas: {weight_ih: &lam 0.5, weight_hh: *lam}\n"
    )
    cfg = load_config(path)
    assert cfg.l2.apply_to == ["weight_ih", "weight_hh"] and cfg.l2.lambdas == {"weight_ih": 0.5, "weight_hh": 0.5}


@pytest.mark.parametrize(
    "item",
    [
        "l2.apply_to=" + "x" * 5000,
        "l2.lambdas={" + "k" * 5000 + ": -1}",
        "optimizer.scheduler.milestones=[" + ",".join(map(str, range(3000, 0, -1))) + "]",
    ],
)
def test_huge_values_are_cut_short_in_messages(tiny_config, item):
    with pytest.raises(ConfigError) as info:
        load_config(tiny_config, [item, "train.epochs=0"])
    assert len(str(info.value)) < 600


def test_yaml_is_read_with_a_safe_loader(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path)


# --------------------------------------------------------------------- overrides


def test_overrides_set_nested_keys(tiny_config):
    cfg = load_config(
        tiny_config, ["l2.lambda=1e-3", "optimizer.scheduler.name=cosine", "train.epochs=3", "model.cell=gru", "seed=7"]
    )
    assert cfg.l2.lambda_ == 1e-3
    assert cfg.optimizer.scheduler.name == "cosine"
    assert cfg.train.epochs == 3 and cfg.model.cell == "gru" and cfg.seed == 7
    assert cfg.model.hidden_size == 8  # siblings from the file survive


def test_override_values_are_parsed_as_yaml(tiny_config):
    cfg = load_config(
        tiny_config,
        [
            "l2.apply_to=[weight_ih,weight_hh]",
            "l2.lambdas={head: 0.5}",
            "train.clip_grad_norm=null",
            "model.bidirectional=true",
        ],
    )
    assert cfg.l2.apply_to == ["weight_ih", "weight_hh"]
    assert cfg.l2.lambdas == {"head": 0.5}
    assert cfg.train.clip_grad_norm is None
    assert cfg.model.bidirectional is True


def test_the_largest_seed_is_accepted(tiny_config):
    assert load_config(tiny_config, [f"seed={2**63 - 1}"]).seed == 2**63 - 1


def test_early_stopping_mode_follows_the_metric(tmp_path):
    assert load_config(write_config(tmp_path, tiny())).train.early_stopping.mode == "min"
    by_accuracy = load_config(write_config(tmp_path, tiny()), ["train.early_stopping.metric=val_accuracy"])
    assert by_accuracy.train.early_stopping.mode == "max"
    explicit = ["train.early_stopping.metric=val_accuracy", "train.early_stopping.mode=max"]
    assert load_config(write_config(tmp_path, tiny()), explicit) == by_accuracy
    sine = tiny(data={"kind": "sine"}, train={"early_stopping": {"metric": "val_rmse"}})
    sine["data"] = {"kind": "sine"}
    assert load_config(write_config(tmp_path, sine)).train.early_stopping.mode == "min"


def test_a_metric_the_data_kind_does_not_log_is_refused_by_config_show(tiny_config):
    result = CliRunner().invoke(
        app,
        [
            "config",
            "show",
            str(tiny_config),
            "--set",
            "data={kind: sine}",
            "--set",
            "train.early_stopping.metric=val_accuracy",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "train.early_stopping.metric: 'val_accuracy' is not logged for sine data" in result.stderr
    assert "val_rmse" in result.stderr and "Traceback" not in result.output


def test_later_overrides_win(tiny_config):
    assert load_config(tiny_config, ["seed=1", "seed=2"]).seed == 2


def test_override_creates_a_missing_section(tmp_path):
    cfg = load_config(write_config(tmp_path, {"name": "n"}), ["optimizer.scheduler.step_size=4"])
    assert cfg.optimizer.scheduler.step_size == 4


def test_misspelt_override_key_suggests_the_right_one(tiny_config):
    with pytest.raises(ConfigError, match=r"l2\.lamda: unknown key; did you mean 'lambda'"):
        load_config(tiny_config, ["l2.lamda=1e-3"])
    with pytest.raises(ConfigError, match=r"train\.batchsize: unknown key; did you mean 'batch_size'"):
        load_config(tiny_config, ["train.batchsize=4"])


@pytest.mark.parametrize("item", ["l2.lambda", "=3", "seed.x=1"])
def test_malformed_override_is_a_config_error(tiny_config, item):
    with pytest.raises(ConfigError, match="--set"):
        load_config(tiny_config, [item])


def test_cli_override_error_exits_2(tiny_config, tmp_path):
    result = CliRunner().invoke(app, ["config", "show", str(tiny_config), "--set", "model.hiden_size=4"])
    assert result.exit_code == 2
    assert "did you mean 'hidden_size'" in result.stderr
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- show and schema


def test_config_show_revalidates_to_the_same_config(tiny_config, tmp_path):
    overrides = ["--set", "l2.lambda=0.25", "--set", "l2.apply_to=[weight_hh,bias]", "--set", "train.epochs=3"]
    result = CliRunner().invoke(app, ["config", "show", str(tiny_config), *overrides])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["l2"]["lambda"] == 0.25  # the alias, not `lambda_`
    again = validate_config(shown)
    assert again == load_config(tiny_config, [o for o in overrides if o != "--set"])
    # and the shown file is itself a valid config file
    assert load_config(write_config(tmp_path, shown, "shown.yaml")) == again


def test_config_show_params_lists_lambda_per_parameter(tiny_config):
    result = CliRunner().invoke(
        app, ["config", "show", str(tiny_config), "--params", "--set", "l2.lambdas={weight_hh: 0.5}"]
    )
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert "0.5" in lines["rnn.weight_hh_l0"]
    assert "1e-3" in lines["rnn.weight_ih_l0"]  # λ as compare and report print it
    assert "—" in lines["rnn.bias_ih_l0"]
    assert "seed:" not in result.stdout and "l2:" not in result.stdout  # the λ table alone, no YAML


def test_config_schema_is_json_with_descriptions():
    result = CliRunner().invoke(app, ["config", "schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert set(schema["properties"]) >= {
        "name",
        "seed",
        "device",
        "data",
        "model",
        "l2",
        "optimizer",
        "train",
        "output",
    }
    defs = schema["$defs"]
    l2 = defs["L2Config"]["properties"]
    assert "lambda" in l2 and "lambda_" not in l2
    assert "λ" in l2["lambda"]["description"]
    assert l2["lambda"]["minimum"] == 0
    assert defs["ModelConfig"]["properties"]["hidden_size"]["description"]
    for name, definition in defs.items():
        for field, prop in definition.get("properties", {}).items():
            if field != "kind":
                assert prop.get("description"), f"{name}.{field} has no description in the schema"


# ---------------------------------------------------------------- path expansion


class PathHolder(BaseModel):
    path: FilePath


def expand(value: str, base_dir: Path | None) -> str:
    return PathHolder.model_validate({"path": value}, context={"base_dir": base_dir}).path


def test_expand_path_resolves_relative_paths_against_the_config_folder(tmp_path):
    assert expand("data/train.txt", tmp_path) == str(tmp_path / "data" / "train.txt")
    assert expand("/abs/file.csv", tmp_path) == "/abs/file.csv"
    assert expand("rel.txt", None) == "rel.txt"


def test_expand_path_expands_variables_and_home(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNL2_TEST_DATA", str(tmp_path / "corpus"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert expand("$RNNL2_TEST_DATA/a.txt", Path("/elsewhere")) == str(tmp_path / "corpus" / "a.txt")
    assert expand("${RNNL2_TEST_DATA}/b.txt", None) == str(tmp_path / "corpus" / "b.txt")
    assert expand("~/c.txt", Path("/elsewhere")) == str(tmp_path / "home" / "c.txt")


def test_expand_path_resolves_a_relative_variable_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RNNL2_TEST_DATA", "../shared/data")
    resolved = expand("${RNNL2_TEST_DATA}/etth1/ETTh1.csv", Path("/configs/folder"))
    assert resolved == str(tmp_path / ".." / "shared" / "data" / "etth1" / "ETTh1.csv")
    monkeypatch.setenv("RNNL2_TEST_DATA", "/abs/data")
    assert expand("$RNNL2_TEST_DATA/a.csv", Path("/configs/folder")) == "/abs/data/a.csv"
    monkeypatch.setenv("RNNL2_TEST_SUB", "sub")
    assert expand("data/$RNNL2_TEST_SUB/a.csv", Path("/configs/folder")) == "/configs/folder/data/sub/a.csv"


def test_expand_path_unset_variable_is_named(monkeypatch):
    monkeypatch.delenv("RNNL2_SURELY_UNSET", raising=False)
    with pytest.raises(ValidationError, match=r"\$RNNL2_SURELY_UNSET is not set"):
        expand("$RNNL2_SURELY_UNSET/x.txt", None)


def test_sections_validate_directly():
    assert L2Config.model_validate({"lambda": 0.5}).lambda_ == 0.5
    with pytest.raises(ValidationError):
        OptimizerConfig(name="sgd", nesterov=True, momentum=0.0)
    assert OptimizerConfig(name="sgd", nesterov=True, momentum=0.9).nesterov
    with pytest.raises(ValidationError, match="betas"):
        OptimizerConfig(betas=(0.9, 1.0))


# Errors only the built model can show: a group or glob that matches no parameter, word dropout on
# feature inputs. `train` and `config show --params` build it; both exit 2 before any folder.
BUILD_ERRORS = {
    "unknown_l1_group": (tiny(l1={"lambda": 1e-4, "apply_to": ["weight_xx"]}), "l1: 'weight_xx' matches no parameter"),
    "unknown_l1_lambdas_glob": (
        tiny(l1={"lambda": 1e-4, "lambdas": {"rnn.kernel*": 1e-3}}),
        "l1: 'rnn.kernel*' matches no parameter",
    ),
    "unknown_max_norm_group": (
        tiny(regularization={"max_norm": {"value": 3, "apply_to": ["kernel"]}}),
        "regularization.max_norm: 'kernel' matches no parameter",
    ),
    "embedding_dropout_on_features": (
        tiny(model={"embedding_dropout": 0.1}),
        "model.embedding_dropout: drops words, but this data's inputs are not tokens",
    ),
}


@pytest.mark.parametrize("command", [["train"], ["config", "show", "--params"]])
@pytest.mark.parametrize("case", sorted(BUILD_ERRORS))
def test_bad_regularizer_selection_exits_2_before_any_run_folder(tmp_path, case, command):
    raw, message = BUILD_ERRORS[case]
    runs = tmp_path / "runs"
    extra = ["--runs-dir", str(runs)] if command == ["train"] else []
    result = CliRunner().invoke(app, [*command, str(write_config(tmp_path, raw)), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not runs.exists() or not any(runs.rglob("*"))


def test_regularizers_at_their_defaults_leave_the_resolved_config_as_before():
    """Keys added by issue 12 are written only when set, so older configs (and sweep hashes) are unchanged."""
    plain = to_plain_dict(validate_config(tiny()))
    assert not {"l1", "regularization"} & set(plain)
    assert not {"input_dropout", "locked_dropout", "weight_drop", "embedding_dropout"} & set(plain["model"])
    explicit = tiny(
        model={"weight_drop": 0.0, "locked_dropout": False, "input_dropout": 0.0, "embedding_dropout": 0.0},
        l1={"lambda": 0.0},
        regularization={"ar": 0.0, "tar": 0.0, "max_norm": None},
    )
    assert to_plain_dict(validate_config(explicit)) == plain
    on = to_plain_dict(validate_config(tiny(model={"weight_drop": 0.5}, regularization={"ar": 2.0})))
    assert on["model"]["weight_drop"] == 0.5 and on["regularization"]["ar"] == 2.0
    assert validate_config(on) == validate_config(tiny(model={"weight_drop": 0.5}, regularization={"ar": 2.0}))
