"""The value grammar of `--grid`, `--seeds` and `--space`: `KEY=V1,V2,…`, YAML values,
`logspace(a,b,n)`/`linspace(a,b,n)`, split at top-level commas only, and how a value is
written back (in folder names and dry-run commands)."""

from __future__ import annotations

import re
from typing import Any, Sequence

import yaml

from ..config.loading import parse_yaml
from ..errors import ConfigError, short_repr

MAX_RUNS = 10_000
"""The most runs one sweep plans (all axes × variants × seeds): more is almost surely a typo in a
logspace count, and planning validates every run's config."""
SPACING = re.compile(r"^(logspace|linspace)\(([^)]*)\)$")


def split_outside(text: str, separator: str) -> list[str]:
    """Split on `separator` outside brackets, parentheses and quotes; every part as written."""
    parts, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    return [*parts, current]


def split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets, parentheses and quotes: `0,[a,b],logspace(-6,-2,5)`."""
    return [part.strip() for part in split_outside(text, ",") if part.strip()]


def parse_value(text: str) -> Any:
    """A YAML value, read as config values are (aliases bounded); `1e-5` is a float here (PyYAML
    alone reads it as a string)."""
    try:
        value = parse_yaml(text)
    except (yaml.YAMLError, RecursionError) as err:
        reason = getattr(err, "problem", None) or "lists or mappings nested too deeply"
        raise ConfigError(f"--grid value {short_repr(text)}: not valid YAML ({reason})") from None
    if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", value):
        return float(value)
    return value


def expand_values(items: Sequence[Any]) -> list[Any]:
    """Values of one axis; `logspace(a,b,n)` → n values 10^a … 10^b, `linspace(a,b,n)` likewise."""
    values: list[Any] = []
    for item in items:
        match = SPACING.match(item.strip()) if isinstance(item, str) else None
        if not match:
            values.append(parse_value(item) if isinstance(item, str) else item)
            continue
        try:
            start, stop, count = (float(x) for x in match.group(2).split(","))
        except ValueError:
            raise ConfigError(f"{item!r}: expected {match.group(1)}(start,stop,count)") from None
        if count < 1 or count != int(count):
            raise ConfigError(f"{item!r}: count must be a positive whole number")
        if count > MAX_RUNS:
            raise ConfigError(f"{item!r}: {count:,.0f} values; a sweep holds at most {MAX_RUNS:,} runs")
        steps = [start + (stop - start) * i / max(int(count) - 1, 1) for i in range(int(count))]
        values += [float(f"{10**x if match.group(1) == 'logspace' else x:.12g}") for x in steps]
    return values


def parse_axis(text: str) -> tuple[str, list[Any]]:
    """`--grid l2.lambda=0,1e-5,logspace(-4,-2,3)` → ("l2.lambda", [0, 1e-05, 0.0001, 0.001, 0.01])."""
    key, sep, rest = text.partition("=")
    if not sep or not key.strip() or not rest.strip():
        raise ConfigError(f"--grid {text!r}: expected KEY=V1,V2,… e.g. --grid l2.lambda=0,1e-4,1e-3")
    return key.strip(), expand_values(split_top_level(rest))


def parse_seeds(text: str) -> list[int]:
    """`--seeds 0,1,2` → [0, 1, 2]."""
    try:
        return [int(item) for item in split_top_level(text)]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected whole numbers such as 0,1,2") from None


def format_value(value: Any) -> str:
    """A value as YAML that reads back to the same value (`1.0e-05`, not PyYAML's string `1e-05`)."""
    if isinstance(value, float):
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()
