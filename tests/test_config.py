"""The config schema: shipped configs, defaults, readable errors (through the CLI), overrides,
`config show` / `config schema`, and path expansion."""

from __future__ import annotations

import copy
import json
import os
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
    validate_config,
)
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
    "negative_group_lambda": (tiny(l2={"lambdas": {"weight_hh": -0.5}}), ["lambdas.weight_hh", ">= 0"]),
    "unknown_mode": (tiny(l2={"mode": "ridge"}), ["l2.mode", "'ridge'", "penalty"]),
    "bad_device": (tiny(device="gpu"), ["device", "'gpu'"]),
    "multistep_without_milestones": (tiny(optimizer={"scheduler": {"name": "multistep"}}), ["multistep needs milestones"]),
    "milestones_out_of_order": (tiny(optimizer={"scheduler": {"milestones": [5, 4]}}), ["milestones must increase", "[5, 4]"]),
    "zero_init_scale": (tiny(model={"init_scale": 0}), ["model.init_scale", "greater than 0"]),
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


def test_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path).name == "empty"


def test_yaml_is_read_with_a_safe_loader(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path)


# --------------------------------------------------------------------- overrides


def test_overrides_set_nested_keys(tiny_config):
    cfg = load_config(tiny_config, ["l2.lambda=1e-3", "optimizer.scheduler.name=cosine", "train.epochs=3",
                                    "model.cell=gru", "seed=7"])
    assert cfg.l2.lambda_ == 1e-3
    assert cfg.optimizer.scheduler.name == "cosine"
    assert cfg.train.epochs == 3 and cfg.model.cell == "gru" and cfg.seed == 7
    assert cfg.model.hidden_size == 8  # siblings from the file survive


def test_override_values_are_parsed_as_yaml(tiny_config):
    cfg = load_config(tiny_config, ["l2.apply_to=[weight_ih,weight_hh]", "l2.lambdas={head: 0.5}",
                                    "train.clip_grad_norm=null", "model.bidirectional=true"])
    assert cfg.l2.apply_to == ["weight_ih", "weight_hh"]
    assert cfg.l2.lambdas == {"head": 0.5}
    assert cfg.train.clip_grad_norm is None
    assert cfg.model.bidirectional is True


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
    result = CliRunner().invoke(app, ["config", "show", str(tiny_config), "--params",
                                      "--set", "l2.lambdas={weight_hh: 0.5}"])
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert "0.5" in lines["rnn.weight_hh_l0"]
    assert "0.001" in lines["rnn.weight_ih_l0"]
    assert "—" in lines["rnn.bias_ih_l0"]


def test_config_schema_is_json_with_descriptions():
    result = CliRunner().invoke(app, ["config", "schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert set(schema["properties"]) >= {"name", "seed", "device", "data", "model", "l2", "optimizer", "train", "output"}
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
