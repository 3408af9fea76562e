"""Search spaces of `tune`: `KEY=SPEC` with SPEC one of `loguniform(a,b)`, `uniform(a,b)`,
`int(a,b)`, `choice(x,y,…)`, optionally after explicit values `V|…` (`0|loguniform(1e-7,1e-1)`
keeps λ = 0 reachable beside a log scale); seeded random draws, grid points, and the same
space spoken to Optuna (imported only there)."""

from __future__ import annotations

import itertools
import json
import math
import random
import re
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import ConfigError, short_repr
from .grid import MAX_RUNS, format_value, parse_value, split_outside, split_top_level

KINDS = ("loguniform", "uniform", "int", "choice")
RULES = (
    "write KEY=loguniform(a,b) with 0 < a < b, KEY=uniform(a,b) with a < b, KEY=int(a,b) with whole "
    "numbers a ≤ b, or KEY=choice(x,y,…); explicit values go before a bar: KEY=0|loguniform(1e-7,1e-1)"
)
DISTRIBUTION = re.compile(r"^(\w+)\((.*)\)$", re.S)
DIGITS = 3
"""Significant digits a sampled float keeps: `l2.lambda=3.22e-05`, a readable folder name, and far
finer than any difference a run can resolve."""
MAX_DRAWS = 100
"""Random draws of one trial before a repeat of an earlier trial's parameters is accepted."""


@dataclass(frozen=True)
class Space:
    """One searched key: a distribution and the explicit values beside it."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple[Any, ...] = ()
    explicit: tuple[Any, ...] = ()
    text: str = ""
    """`KEY=SPEC` as given: the definition a tune folder records."""

    @property
    def spec(self) -> str:
        """The distribution part of the text (after the explicit values)."""
        return self.text.partition("=")[2].rpartition("|")[2].strip()

    def bounds(self) -> list[Any]:
        """The values that test the key against the config schema: both ends, every listed value."""
        ends = [self.low, self.high] if self.kind != "choice" else []
        return [*self.explicit, *ends, *self.choices]


# --------------------------------------------------------------------------- parsing


def parse_space(text: str) -> Space:
    """`l2.lambda=0|loguniform(1e-7,1e-1)` → Space("l2.lambda", "loguniform", 1e-07, 0.1, explicit=(0,))."""
    key, sep, rest = text.partition("=")
    key = key.strip()
    if not sep or not key or not rest.strip() or not re.fullmatch(r"[A-Za-z_][\w.]*", key):
        raise ConfigError(f"--space {short_repr(text)}: expected KEY=SPEC; {RULES}")
    *values, spec = split_outside(rest, "|")
    match = DISTRIBUTION.match(spec.strip())
    if not match or match.group(1) not in KINDS:
        raise ConfigError(f"--space {short_repr(text)}: {short_repr(spec.strip())} is not a distribution; {RULES}")
    kind, arguments = match.group(1), split_top_level(match.group(2))

    def fail(problem: str) -> ConfigError:
        return ConfigError(f"--space {short_repr(text)}: {problem}; {RULES}")

    def read(item: str) -> Any:
        try:
            return parse_value(item.strip())
        except ConfigError:
            raise fail(f"{short_repr(item.strip())} is not a YAML value") from None

    explicit = tuple(read(v) for v in values if v.strip())
    if len(explicit) != len(values):
        raise fail("an explicit value before | is empty")
    if kind == "choice":
        choices = tuple(read(a) for a in arguments)
        if not choices:
            raise fail("choice() needs at least one value")
        if len({json.dumps(c, sort_keys=True, default=str) for c in choices}) < len(choices):
            raise fail("choice() lists a value twice")
        return Space(key, kind, choices=choices, explicit=explicit, text=text.strip())
    if len(arguments) != 2:
        raise fail(f"{kind}() takes two bounds, got {len(arguments)}")
    low, high = (read(a) for a in arguments)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high))
    if not numbers:
        raise fail(f"{kind}() bounds must be finite numbers")
    if kind == "int" and not all(isinstance(v, int) for v in (low, high)):
        raise fail("int() bounds must be whole numbers such as int(1,4)")
    if kind == "loguniform" and not 0 < low < high:
        raise fail("loguniform(a,b) needs 0 < a < b (a log scale has no 0: put it before a bar, 0|loguniform(…))")
    if (kind == "uniform" and not low < high) or (kind == "int" and not low <= high):
        raise fail(f"{kind}(a,b) needs a {'<' if kind == 'uniform' else '≤'} b")
    if kind != "int":
        low, high = float(low), float(high)
    return Space(key, kind, low, high, explicit=explicit, text=text.strip())


def parse_spaces(texts: Sequence[str]) -> list[Space]:
    """Every `--space`; at least one, each key once."""
    spaces = [parse_space(t) for t in texts]
    if not spaces:
        raise ConfigError(f"tune needs at least one --space; {RULES}")
    keys = [s.key for s in spaces]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ConfigError(f"--space {repeated[0]} is given twice; give each key once")
    return spaces


def overrides(params: dict[str, Any]) -> list[str]:
    """A trial's parameters as `--set` items."""
    return [f"{k}={format_value(v)}" for k, v in params.items()]


def params_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


# ------------------------------------------------------------------- random and grid


def rounded(value: float, space: Space) -> float:
    """A sampled float to DIGITS significant digits, kept inside the bounds."""
    return min(max(float(f"{value:.{DIGITS}g}"), space.low), space.high)


def draw(space: Space, rng: random.Random) -> Any:
    """One value: each explicit value and the distribution are equally likely."""
    pick = rng.randrange(len(space.explicit) + 1)
    if pick < len(space.explicit):
        return space.explicit[pick]
    if space.kind == "choice":
        return space.choices[rng.randrange(len(space.choices))]
    if space.kind == "int":
        return rng.randint(space.low, space.high)
    if space.kind == "loguniform":
        return rounded(math.exp(rng.uniform(math.log(space.low), math.log(space.high))), space)
    return rounded(rng.uniform(space.low, space.high), space)


def random_params(spaces: list[Space], seed: int, index: int, taken: set[str] = frozenset()) -> dict[str, Any]:
    """Trial `index`'s parameters, a function of (seed, index) alone when nothing repeats: a draw
    equal to an earlier trial's (`taken`) is drawn again, up to MAX_DRAWS times, so an explicit
    value such as λ = 0 is tried once, not in half the trials."""
    params: dict[str, Any] = {}
    for attempt in range(MAX_DRAWS):
        rng = random.Random(f"rnnl2-tune:{seed}:{index}:{attempt}")  # a str seed is hashed (sha512), never salted
        params = {s.key: draw(s, rng) for s in spaces}
        if params_key(params) not in taken:
            break
    return params


def grid_values(space: Space, points: int) -> list[Any]:
    """A space's grid: explicit values, then every choice, every integer (when there are at most
    `points`), or `points` values evenly spaced on the log or linear scale, ends included."""
    if space.kind == "choice":
        values = list(space.choices)
    elif space.kind == "int" and space.high - space.low + 1 <= points:
        values = list(range(space.low, space.high + 1))
    else:
        log = space.kind == "loguniform"
        a, b = (math.log10(space.low), math.log10(space.high)) if log else (space.low, space.high)
        steps = [a + (b - a) * i / max(points - 1, 1) for i in range(points)]
        values = [round(x) if space.kind == "int" else rounded(10**x if log else x, space) for x in steps]
    unique = {params_key(v): v for v in [*space.explicit, *values]}
    return list(unique.values())


def grid_size(spaces: list[Space], points: int) -> int:
    return math.prod(len(grid_values(s, points)) for s in spaces)


def grid_params(spaces: list[Space], points: int) -> list[dict[str, Any]]:
    """The product of every space's grid values, first space slowest."""
    size = grid_size(spaces, points)
    if size > MAX_RUNS:
        raise ConfigError(f"the grid has {size:,} points; at most {MAX_RUNS:,} are allowed (fewer --grid-points?)")
    axes = [grid_values(s, points) for s in spaces]
    return [dict(zip((s.key for s in spaces), combo)) for combo in itertools.product(*axes)]


# ------------------------------------------------------------------------------ Optuna


def pick_name(space: Space) -> str:
    """The categorical Optuna parameter that chooses between explicit values and the distribution."""
    return f"{space.key}:pick"


def pick_labels(space: Space) -> list[str]:
    return [format_value(v) for v in space.explicit] + [space.spec]


def suggest(trial, spaces: list[Space]) -> dict[str, Any]:
    """Ask an Optuna trial for every space (define-by-run): `V|dist` is a categorical pick among
    the explicit values and the distribution, then the distribution only when picked."""
    params: dict[str, Any] = {}
    for space in spaces:
        if space.explicit:
            label = trial.suggest_categorical(pick_name(space), pick_labels(space))
            if label != space.spec:
                params[space.key] = space.explicit[pick_labels(space).index(label)]
                continue
        if space.kind == "choice":
            labels = [format_value(c) for c in space.choices]
            params[space.key] = space.choices[labels.index(trial.suggest_categorical(space.key, labels))]
        elif space.kind == "int":
            params[space.key] = trial.suggest_int(space.key, space.low, space.high)
        else:
            value = trial.suggest_float(space.key, space.low, space.high, log=space.kind == "loguniform")
            params[space.key] = rounded(value, space)
    return params


def optuna_params(spaces: list[Space], params: dict[str, Any]) -> dict[str, Any]:
    """Our parameters as Optuna's (for `enqueue_trial`): the inverse of `suggest`."""
    out: dict[str, Any] = {}
    for space in spaces:
        value = params[space.key]
        explicit = [params_key(v) for v in space.explicit]
        if space.explicit:
            index = explicit.index(params_key(value)) if params_key(value) in explicit else len(explicit)
            out[pick_name(space)] = pick_labels(space)[index]
            if index < len(explicit):
                continue
        out[space.key] = format_value(value) if space.kind == "choice" else value
    return out
