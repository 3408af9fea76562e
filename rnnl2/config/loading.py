"""`load_config`: YAML file + `--set` overrides → a validated `RunConfig`, or a `ConfigError`
that lists every bad key with its value, the rule and a "did you mean" for typos."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from .data_kinds import DATA_KINDS, SeedTaggingData
from .schema import RunConfig


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping safely; errors name the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config ({err})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {err.problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `a.b=value` overrides (values parsed as YAML) to a nested mapping, in order."""
    for item in overrides:
        dotted, sep, value = item.partition("=")
        if not sep or not dotted.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set l2.lambda=1e-4")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({err})") from None
        *parents, leaf = dotted.strip().split(".")
        node = raw
        for depth, key in enumerate(parents):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                where = ".".join(parents[: depth + 1])
                raise ConfigError(f"--set {item!r}: {where} is a value, not a section")
            node = child
        node[leaf] = parsed
    return raw


def load_config(path: Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML file, apply `a.b=value` overrides, validate the result."""
    raw = apply_overrides(read_yaml(Path(path)), overrides)
    raw.setdefault("name", Path(path).stem)
    return validate_config(raw, source=str(path), base_dir=Path(path).resolve().parent)


def validate_config(raw: dict[str, Any], source: str = "config", base_dir: Path | None = None) -> RunConfig:
    """Validate a raw mapping; a failure lists every bad key with its value and the rule.

    Relative data paths resolve against `base_dir` (the config file's folder)."""
    try:
        return RunConfig.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as err:
        lines = [describe_error(e, raw) for e in err.errors()]
        raise ConfigError(f"{source}: invalid config\n" + "\n".join(f"  {l}" for l in lines)) from None


def describe_error(error: dict[str, Any], raw: dict[str, Any]) -> str:
    """One readable line for one pydantic error: `key.path: what is wrong, got value`."""
    loc = strip_union_tags(list(error["loc"]), raw)
    path = ".".join(str(part) for part in loc) or "(top level)"
    if len(path) > 120:  # a huge key
        path = short_repr(path)
    if error["type"] == "extra_forbidden":
        hint = suggest_key(loc, raw)
        return f"{path}: unknown key{hint}"
    if error["type"] == "missing":
        return f"{path}: required key is missing"
    if error["type"] == "union_tag_invalid":
        ctx = error["ctx"]
        return f"{path}.kind: must be one of {ctx['expected_tags']}, got {short_repr(ctx['tag'])}"
    message = lower_first(error["msg"].removeprefix("Value error, "))
    value = error.get("input")
    if isinstance(value, dict):  # a rule across keys: the message names them
        return f"{path}: {message}"
    return f"{path}: {message}, got {short_repr(value)}"


def short_repr(value: Any, limit: int = 80) -> str:
    """repr() cut to `limit` characters, so a huge value cannot flood the error message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}… ({len(text):,} characters)"


def lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def strip_union_tags(loc: list[Any], raw: dict[str, Any]) -> list[Any]:
    """Drop the discriminator value pydantic inserts after `data` (data.sine.lookback → data.lookback)."""
    if len(loc) > 1 and loc[0] == "data":
        kind = raw.get("data", {}).get("kind", "seed_tagging") if isinstance(raw.get("data"), dict) else None
        if loc[1] == kind:
            return [loc[0], *loc[2:]]
    return loc


def section_model(loc: Sequence[Any], raw: dict[str, Any]) -> type[BaseModel] | None:
    """The pydantic model of the section that holds the key at `loc`."""
    model: type[BaseModel] = RunConfig
    for key in loc[:-1]:
        if model is RunConfig and key == "data":
            data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
            kinds = {m.model_fields["kind"].default: m for m in DATA_KINDS}
            model = kinds.get(data.get("kind", "seed_tagging"), SeedTaggingData)
            continue
        field = model.model_fields.get(str(key))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def suggest_key(loc: Sequence[Any], raw: dict[str, Any]) -> str:
    """`; did you mean 'lambda'?` when a close valid key exists, else the list of valid keys."""
    model = section_model(loc, raw)
    if model is None:
        return ""
    names = [f.alias or name for name, f in model.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; valid keys: {', '.join(names)}"
