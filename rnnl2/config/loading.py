"""`load_config`: YAML file + `--set` overrides → a validated `RunConfig`, or a `ConfigError`
that lists every bad key with its value, the rule and a "did you mean" for typos."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import ConfigError, short_repr
from .data_kinds import DATA_KINDS, SeedTaggingData
from .schema import RunConfig

MAX_YAML_VALUES = 100_000
"""The most values (scalars, lists and mappings, counted after every alias is expanded) one YAML
document may hold: a config or sweep file has a few hundred, while nine nested levels of aliases
(`&a [*b, *b, …]`, an "alias bomb") expand a 400-byte file to hundreds of millions."""


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a document expanding to more than MAX_YAML_VALUES values,
    or holding an alias to a node that contains it, before anything is built from it."""

    def construct_document(self, node: yaml.Node) -> Any:
        check_expanded_size(node, MAX_YAML_VALUES)
        return super().construct_document(node)


def node_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def check_expanded_size(root: yaml.Node, limit: int) -> None:
    """Count the values of `root` as if every alias were copied out, memoised per node (so the
    count itself stays linear in the file), without recursion (so deep nesting cannot overflow)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # the nodes on the path from the root to the current one
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in node_children(node))
            if sizes[key] > limit:
                raise yaml.constructor.ConstructorError(
                    None, None, f"too many aliases: the document expands to more than {limit:,} values", node.start_mark
                )
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise yaml.constructor.ConstructorError(
                None, None, "an alias refers to a list or mapping that contains it (a cycle)", node.start_mark
            )
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in node_children(node))


def parse_yaml(text: str) -> Any:
    """One YAML document, parsed safely and bounded (see MAX_YAML_VALUES). Raises yaml.YAMLError,
    or RecursionError for nesting deeper than PyYAML's recursive composer can follow."""
    return yaml.load(text, Loader=BoundedLoader)


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping (a config or sweep file) safely; errors name the file, line and column.
    A file with no keys (empty, only comments, `null`, `{}`) is refused: it would run every default."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config ({err})") from None
    try:
        raw = parse_yaml(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {clip(err.problem)}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {clip(err)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: lists or mappings nested too deeply") from None
    if raw is None or raw == {}:
        raise ConfigError(
            f"{path}: is empty (no keys, only comments or null); "
            f"a config names at least its data, e.g. `data: {{kind: seed_tagging}}`"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `a.b=value` overrides (values parsed as YAML) to a nested mapping, in order."""
    for item in overrides:
        dotted, sep, value = item.partition("=")
        if not sep or not dotted.strip():
            raise ConfigError(f"--set {short_repr(item)}: expected KEY=VALUE, e.g. --set l2.lambda=1e-4")
        try:
            parsed = parse_yaml(value)
        except yaml.MarkedYAMLError as err:
            raise ConfigError(f"--set {short_repr(item)}: the value is not valid YAML ({clip(err.problem)})") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {short_repr(item)}: the value is not valid YAML ({clip(err)})") from None
        except RecursionError:
            raise ConfigError(f"--set {short_repr(item)}: the value nests lists or mappings too deeply") from None
        *parents, leaf = dotted.strip().split(".")
        node = raw
        for depth, key in enumerate(parents):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                where = ".".join(parents[: depth + 1])
                raise ConfigError(f"--set {short_repr(item)}: {short_repr(where)} is a value, not a section")
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


def describe_error(error: Mapping[str, Any], raw: dict[str, Any]) -> str:
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
        return message if not loc else f"{path}: {message}"
    return f"{path}: {message}, got {short_repr(value)}"


def clip(text: Any, limit: int = 200) -> str:
    """A message from PyYAML (which may quote a long anchor or tag) cut to `limit` characters."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
            given = raw.get("data")
            data = given if isinstance(given, dict) else {}
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
